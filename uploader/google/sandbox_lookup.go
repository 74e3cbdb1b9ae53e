package google

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/closedloop/closedloop/uploader/sandbox"
)

// lookupAction returns conversion action id as customer cid sees it.
func lookupAction(l sandbox.LookupFaults, cid, id string, marker string) (sandbox.ConversionAction, bool) {
	if id == marker || slices.Contains(l.UnknownActions, id) || !digits.MatchString(id) {
		return sandbox.ConversionAction{}, false
	}
	for _, a := range l.ConversionActions {
		if a.ID == id {
			return withDefaults(a, cid), true
		}
	}
	return sandbox.ConversionAction{ID: id, Name: "Sandbox action " + id, Status: "ENABLED", Type: "UPLOAD_CLICKS", Owner: cid}, true
}

// lookupNamed returns the conversion actions called name.
func lookupNamed(l sandbox.LookupFaults, cid, name string) []sandbox.ConversionAction {
	var out []sandbox.ConversionAction
	for _, a := range l.ConversionActions {
		if a.Name == name && !slices.Contains(l.UnknownActions, a.ID) {
			out = append(out, withDefaults(a, cid))
		}
	}
	return out
}

func withDefaults(a sandbox.ConversionAction, cid string) sandbox.ConversionAction {
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

// lookupDestinationProblem is what Data Manager's ingest validation says about sending to
// conversion action id of operating account cid: "" when it takes it.
func lookupDestinationProblem(l sandbox.LookupFaults, cid, id, marker string) string {
	a, ok := lookupAction(l, cid, id, marker)
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

var (
	gaqlFrom    = regexp.MustCompile(`(?i)\bFROM\s+([a-z_]+)`)
	gaqlIDs     = regexp.MustCompile(`(?i)\bconversion_action\.id\s*(?:IN\s*\(([^)]*)\)|=\s*([0-9]+))`)
	gaqlName    = regexp.MustCompile(`(?i)\bconversion_action\.name\s*=\s*'((?:[^'\\]|\\.)*)'`)
	adsVersionR = regexp.MustCompile(`^v[0-9]+$`)
)

// handleAdsSearch emulates `POST /{version}/customers/{cid}/googleAds:search` for the two
// queries closedloop makes: FROM customer, and FROM conversion_action by id (= or IN) or
// by name (=).
func (s *emulator) handleAdsSearch(w http.ResponseWriter, r *http.Request, version, cid string) {
	if r.Method != http.MethodPost || !adsVersionR.MatchString(version) {
		http.NotFound(w, r)
		return
	}
	f := s.Faults()
	if !s.googleAuth(w, r, AdsName, f) {
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
	_, body, err := sandbox.ReadJSON(r)
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
		var found []sandbox.ConversionAction
		switch ids, name := gaqlIDs.FindStringSubmatch(q), gaqlName.FindStringSubmatch(q); {
		case ids != nil:
			list := ids[2]
			if ids[1] != "" {
				list = ids[1]
			}
			for _, id := range strings.Split(list, ",") {
				if a, ok := lookupAction(f.Lookup, cid, strings.TrimSpace(id), f.Marker()); ok {
					found = append(found, a)
				}
			}
		case name != nil:
			found = lookupNamed(f.Lookup, cid, strings.ReplaceAll(name[1], `\'`, `'`))
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
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"results": results, "fieldMask": "emulated"})
}
