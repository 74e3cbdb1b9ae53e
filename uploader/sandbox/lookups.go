package sandbox

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// LookupFaults shape what the emulated read-only lookups answer (`closedloop destinations
// test` and conversion actions by name): the Google Ads `googleAds:search` over
// conversion_action and customer, the Graph API dataset read, and the destinations Data
// Manager validates on ingest.
//
// Without any, every numeric conversion action id exists, is ENABLED, of type UPLOAD_CLICKS
// and owned by the customer asked about (as the upload endpoints assume), and every numeric
// dataset and event set exists. A name is only found among ConversionActions.
type LookupFaults struct {
	// ConversionActions are answered as listed (ambiguous names: list two with one name and
	// different owners). Owner defaults to the customer asked about, Status to ENABLED, Type
	// to UPLOAD_CLICKS.
	ConversionActions []ConversionAction `json:"conversion_actions,omitempty"`
	// UnknownActions are conversion action ids that do not exist (nor does the reject marker).
	UnknownActions []string `json:"unknown_actions,omitempty"`
	// UnknownCustomers are Google Ads customer ids the credentials cannot access.
	UnknownCustomers []string `json:"unknown_customers,omitempty"`
	// UnknownDatasets are Meta dataset ids and TikTok event set ids that do not exist.
	UnknownDatasets []string `json:"unknown_datasets,omitempty"`
}

// ConversionAction is one emulated Google Ads conversion action.
type ConversionAction struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status,omitempty"`         // ENABLED | REMOVED | HIDDEN
	Type   string `json:"type,omitempty"`           // UPLOAD_CLICKS | WEBPAGE | UPLOAD_CALLS | ...
	Owner  string `json:"owner_customer,omitempty"` // 10-digit customer id
}

// action returns conversion action id as customer cid sees it.
func (l LookupFaults) action(cid, id string, marker string) (ConversionAction, bool) {
	if id == marker || slices.Contains(l.UnknownActions, id) || !digits.MatchString(id) {
		return ConversionAction{}, false
	}
	for _, a := range l.ConversionActions {
		if a.ID == id {
			return a.withDefaults(cid), true
		}
	}
	return ConversionAction{ID: id, Name: "Sandbox action " + id, Status: "ENABLED", Type: "UPLOAD_CLICKS", Owner: cid}, true
}

// named returns the conversion actions called name.
func (l LookupFaults) named(cid, name string) []ConversionAction {
	var out []ConversionAction
	for _, a := range l.ConversionActions {
		if a.Name == name && !slices.Contains(l.UnknownActions, a.ID) {
			out = append(out, a.withDefaults(cid))
		}
	}
	return out
}

func (a ConversionAction) withDefaults(cid string) ConversionAction {
	if a.Owner == "" {
		a.Owner = cid
	}
	if a.Status == "" {
		a.Status = "ENABLED"
	}
	if a.Type == "" {
		a.Type = "UPLOAD_CLICKS"
	}
	return a
}

// destinationProblem is what Data Manager's ingest validation says about sending to
// conversion action id of operating account cid: "" when it takes it.
func (l LookupFaults) destinationProblem(cid, id, marker string) string {
	a, ok := l.action(cid, id, marker)
	switch {
	case !ok:
		return "conversion action not found"
	case a.Status != "ENABLED":
		return "conversion action is " + a.Status
	case a.Type != "UPLOAD_CLICKS":
		return "conversion action of type " + a.Type + " cannot receive offline events"
	case a.Owner != cid:
		return "conversion action belongs to customer " + a.Owner + ", not the operating account"
	}
	return ""
}

func (l LookupFaults) unknownDataset(id string) bool { return slices.Contains(l.UnknownDatasets, id) }

var (
	gaqlFrom    = regexp.MustCompile(`(?i)\bFROM\s+([a-z_]+)`)
	gaqlIDs     = regexp.MustCompile(`(?i)\bconversion_action\.id\s*(?:IN\s*\(([^)]*)\)|=\s*([0-9]+))`)
	gaqlName    = regexp.MustCompile(`(?i)\bconversion_action\.name\s*=\s*'((?:[^'\\]|\\.)*)'`)
	adsVersionR = regexp.MustCompile(`^v[0-9]+$`)
)

// handleAdsSearch emulates `POST /{version}/customers/{cid}/googleAds:search` for the two
// queries closedloop makes: FROM customer, and FROM conversion_action by id (= or IN) or
// by name (=).
func (s *Server) handleAdsSearch(w http.ResponseWriter, r *http.Request, version, cid string) {
	if r.Method != http.MethodPost || !adsVersionR.MatchString(version) {
		http.NotFound(w, r)
		return
	}
	f := s.Faults()
	if !s.googleAuth(w, r, GoogleAds, f) {
		return
	}
	queryError := func(enum, msg string) {
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "", "", nil,
			adsFailure([]adsRowError{{index: -1, typ: "queryError", enum: enum, msg: msg}}, ""))
	}
	if !tenDigits.MatchString(cid) {
		queryError("INVALID_CUSTOMER_ID", "customer ID must be 10 digits")
		return
	}
	if slices.Contains(f.Lookup.UnknownCustomers, cid) {
		googleStatus(w, http.StatusForbidden, "PERMISSION_DENIED", "The caller does not have permission", "", "", nil,
			adsFailure([]adsRowError{{index: -1, typ: "authorizationError", enum: "USER_PERMISSION_DENIED",
				msg: "User doesn't have permission to access customer. Note: If you're accessing a client customer, the manager's customer id must be set in the 'login-customer-id' header."}}, ""))
		return
	}
	_, body, err := readJSON(r)
	if err != nil {
		queryError("UNEXPECTED_END_OF_QUERY", err.Error())
		return
	}
	q := str(obj(body)["query"])
	from := gaqlFrom.FindStringSubmatch(q)
	if from == nil {
		queryError("EXPECTED_FROM", "Expected FROM.")
		return
	}
	results := []any{}
	switch strings.ToLower(from[1]) {
	case "customer":
		results = append(results, map[string]any{"customer": map[string]any{
			"resourceName": "customers/" + cid, "id": cid, "descriptiveName": "Sandbox customer " + cid, "manager": false,
		}})
	case "conversion_action":
		var found []ConversionAction
		switch ids, name := gaqlIDs.FindStringSubmatch(q), gaqlName.FindStringSubmatch(q); {
		case ids != nil:
			list := ids[2]
			if ids[1] != "" {
				list = ids[1]
			}
			for _, id := range strings.Split(list, ",") {
				if a, ok := f.Lookup.action(cid, strings.TrimSpace(id), f.marker()); ok {
					found = append(found, a)
				}
			}
		case name != nil:
			found = f.Lookup.named(cid, strings.ReplaceAll(name[1], `\'`, `'`))
		default:
			queryError("PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE", "the sandbox answers conversion_action queries by id or name only")
			return
		}
		for _, a := range found {
			results = append(results, map[string]any{"conversionAction": map[string]any{
				"resourceName": "customers/" + cid + "/conversionActions/" + a.ID, "id": a.ID, "name": a.Name,
				"status": a.Status, "type": a.Type, "ownerCustomer": "customers/" + a.Owner,
			}})
		}
	default:
		queryError("PROHIBITED_RESOURCE_TYPE_IN_FROM_CLAUSE", fmt.Sprintf("the sandbox does not emulate FROM %s", from[1]))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "fieldMask": "emulated"})
}

// handleMetaDataset emulates `GET /{version}/{dataset_id}?fields=id,name`.
func (s *Server) handleMetaDataset(w http.ResponseWriter, r *http.Request, version, dataset string) {
	if !graphVersion.MatchString(version) {
		http.NotFound(w, r)
		return
	}
	f := s.Faults()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = r.URL.Query().Get("access_token")
	}
	switch {
	case token == "":
		s.metaError(w, http.StatusBadRequest, "OAuthException", 104, 0, "An access token is required to request this resource.", false)
		return
	case f.ExpiredToken:
		s.metaError(w, http.StatusBadRequest, "OAuthException", 190, 463, "Error validating access token: Session has expired.", false)
		return
	case s.opts.MetaAccessToken != "" && token != s.opts.MetaAccessToken:
		s.metaError(w, http.StatusBadRequest, "OAuthException", 190, 0, "Invalid OAuth access token - Cannot parse access token", false)
		return
	}
	if !digits.MatchString(dataset) || f.Lookup.unknownDataset(dataset) {
		s.metaError(w, http.StatusBadRequest, "GraphMethodException", 100, 33,
			fmt.Sprintf("Unsupported get request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", dataset), false)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": dataset, "name": "Sandbox dataset " + dataset})
}
