package crmsandbox

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ---- Salesforce ----

// ExpireSalesforceSessions makes every access token issued so far invalid (the next
// request answers 401 INVALID_SESSION_ID), as a session timeout does.
func (s *Server) ExpireSalesforceSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sfTokens = map[string]bool{}
}

// SetSalesforceSingleCurrency makes the org a single-currency one: a query naming
// CurrencyIsoCode answers 400 INVALID_FIELD.
func (s *Server) SetSalesforceSingleCurrency(single bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sfSingleCurrency = single
}

// TokenRequests is how many times Salesforce's token endpoint was called.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[Salesforce+"/token"]
}

// salesforceToken is the OAuth 2.0 refresh-token grant of /services/oauth2/token.
func (s *Server) salesforceToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[Salesforce+"/token"]++
	s.mu.Unlock()
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "refresh_token" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unsupported_grant_type", "error_description": "grant type not supported"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != SalesforceClientID || secret != SalesforceClientSecret {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_client", "error_description": "invalid client credentials"})
		return
	}
	if r.PostForm.Get("refresh_token") != SalesforceRefreshToken {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_grant", "error_description": "expired access/refresh token"})
		return
	}
	s.mu.Lock()
	s.sfIssued++
	tok := fmt.Sprintf("00Dsandbox!access-%d", s.sfIssued)
	s.sfTokens[tok] = true
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "scope": "api refresh_token",
		"instance_url": "https://sandbox.my.salesforce.com", "id": "https://login.salesforce.com/id/00Dsandbox/005sandbox",
		"issued_at": strconv.FormatInt(time.Now().UnixMilli(), 10), "signature": "c2FuZGJveA=="})
}

var soqlWhere = regexp.MustCompile(`(?is)^SELECT\s+(.+?)\s+FROM\s+(Opportunity|Contact)\s+WHERE\s+Id\s+IN\s+\(([^)]*)\)\s*$`)

// salesforceQuery answers the SOQL queries the enricher sends: opportunities by id with
// their contact roles' contacts, and contacts by id.
func (s *Server) salesforceQuery(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Salesforce, w, r) {
		return
	}
	version := r.PathValue("version")
	m := soqlWhere.FindStringSubmatch(r.URL.Query().Get("q"))
	if m == nil {
		writeJSON(w, http.StatusBadRequest, []map[string]any{{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}})
		return
	}
	fields, entity := m[1], m[2]
	s.mu.Lock()
	single := s.sfSingleCurrency
	s.mu.Unlock()
	if single && strings.Contains(fields, "CurrencyIsoCode") {
		writeJSON(w, http.StatusBadRequest, []map[string]any{{"message": "No such column 'CurrencyIsoCode' on entity 'Opportunity'.", "errorCode": "INVALID_FIELD"}})
		return
	}
	var ids []string
	for _, part := range strings.Split(m[3], ",") {
		ids = append(ids, strings.Trim(strings.TrimSpace(part), "'"))
	}
	records := []map[string]any{}
	attrs := func(typ, id string) map[string]any {
		return map[string]any{"type": typ, "url": "/services/data/" + version + "/sobjects/" + typ + "/" + id}
	}
	contact := func(id string) (map[string]any, bool) {
		c, ok := s.contact(Salesforce, id)
		if !ok {
			return nil, false
		}
		s.read(Salesforce, "contact", id)
		return map[string]any{"attributes": attrs("Contact", id), "Id": id, "Email": first(c.Emails, 0),
			"Phone": first(c.Phones, 0), "MobilePhone": first(c.Phones, 1)}, true
	}
	for _, id := range ids {
		if entity == "Contact" {
			if c, ok := contact(id); ok {
				records = append(records, c)
			}
			continue
		}
		d, ok := s.deal(Salesforce, id)
		if !ok && len(id) == 15 { // Salesforce takes the 15-character form and answers the 18
			s.mu.Lock()
			for full, x := range s.deals[Salesforce] {
				if strings.HasPrefix(full, id) {
					d, ok = x, true
				}
			}
			s.mu.Unlock()
		}
		if !ok {
			continue
		}
		id = d.ID
		s.read(Salesforce, "deal", id)
		rec := map[string]any{"attributes": attrs("Opportunity", id), "Id": id, "Amount": nil, "OpportunityContactRoles": nil}
		if d.Amount != "" {
			rec["Amount"] = jsonNumber(d.Amount)
		}
		if strings.Contains(fields, "CurrencyIsoCode") {
			rec["CurrencyIsoCode"] = d.Currency
		}
		var roles []map[string]any
		for i, cid := range d.ContactIDs {
			c, ok := contact(cid)
			if !ok {
				continue
			}
			delete(c, "Id")
			c["Id"] = cid
			roles = append(roles, map[string]any{"attributes": attrs("OpportunityContactRole", fmt.Sprintf("00K%015d", i)),
				"ContactId": cid, "Contact": c})
		}
		if len(roles) > 0 {
			rec["OpportunityContactRoles"] = map[string]any{"totalSize": len(roles), "done": true, "records": roles}
		}
		records = append(records, rec)
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalSize": len(records), "done": true, "records": records})
}

// ---- Attio ----

func attioIDs(workspaceObject, record string) map[string]any {
	return map[string]any{"workspace_id": "14beef7a-99f7-4534-a87e-70b564330a4c", "object_id": workspaceObject, "record_id": record}
}

func attioValue(at time.Time, typ string, fields map[string]any) map[string]any {
	v := map[string]any{"active_from": at.UTC().Format("2006-01-02T15:04:05.000000000Z"), "active_until": nil,
		"created_by_actor": map[string]any{"type": "workspace-member", "id": "50cf242c-7fa3-4cad-87d0-75b1af71c57b"},
		"attribute_type":   typ}
	for k, x := range fields {
		v[k] = x
	}
	return v
}

func attioStatus(at time.Time, parent, attribute, title string) map[string]any {
	return attioValue(at, "status", map[string]any{"status": map[string]any{
		"id":    map[string]any{"workspace_id": "14beef7a-99f7-4534-a87e-70b564330a4c", "object_id": parent, "attribute_id": attribute, "status_id": "11f07f01-c10f-4e05-a522-33e050bc52ee"},
		"title": title, "is_archived": false, "celebration_enabled": false, "target_time_in_status": nil}})
}

func attioNotFound(w http.ResponseWriter, what, id string) {
	writeJSON(w, http.StatusNotFound, map[string]any{"status_code": 404, "type": "invalid_request_error", "code": "not_found",
		"message": what + " with ID \"" + id + "\" not found."})
}

// attioRecord answers GET /v2/objects/{object}/records/{id}: a deal (stage, value,
// associated_people) or a person (email_addresses, phone_numbers).
func (s *Server) attioRecord(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Attio, w, r) {
		return
	}
	object, id := r.PathValue("object"), r.PathValue("id")
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	if object == "people" {
		c, ok := s.contact(Attio, id)
		if !ok {
			attioNotFound(w, "Record", id)
			return
		}
		s.read(Attio, "contact", id)
		emails, phones := []any{}, []any{}
		for _, e := range c.Emails {
			emails = append(emails, attioValue(at, "email-address", map[string]any{"original_email_address": e, "email_address": e,
				"email_domain": "", "email_root_domain": "", "email_local_specifier": ""}))
		}
		for _, p := range c.Phones {
			phones = append(phones, attioValue(at, "phone-number", map[string]any{"original_phone_number": p, "country_code": "US"}))
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": attioIDs("people", id), "created_at": "2022-11-21T13:22:49.061281000Z",
			"web_url": "https://app.attio.com/sandbox/person/" + id, "values": map[string]any{"email_addresses": emails, "phone_numbers": phones}}})
		return
	}
	d, ok := s.deal(Attio, id)
	if !ok || (d.Object != "" && d.Object != object) {
		attioNotFound(w, "Record", id)
		return
	}
	s.read(Attio, "deal", id)
	values := map[string]any{"name": []any{attioValue(at, "text", map[string]any{"value": "Deal " + id})}}
	if d.Stage != "" {
		values["stage"] = []any{attioStatus(d.StageAt, object, d.StageAttribute, d.Stage)}
	}
	if d.Amount != "" {
		values["value"] = []any{attioValue(at, "currency", map[string]any{"currency_value": jsonNumber(d.Amount), "currency_code": d.Currency})}
	}
	people := []any{}
	for _, c := range d.ContactIDs {
		people = append(people, attioValue(at, "record-reference", map[string]any{"target_object": "people", "target_record_id": c}))
	}
	values["associated_people"] = people
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": attioIDs(object, id), "created_at": "2022-11-21T13:22:49.061281000Z",
		"web_url": "https://app.attio.com/sandbox/deals/" + id, "values": values}})
}

// attioEntry answers GET /v2/lists/{list}/entries/{id}.
func (s *Server) attioEntry(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Attio, w, r) {
		return
	}
	list, id := r.PathValue("list"), r.PathValue("id")
	var found *Entry
	var parent Deal
	s.mu.Lock()
	for _, d := range s.deals[Attio] {
		for _, e := range d.Entries {
			if e.List == list && e.ID == id {
				e := e
				found, parent = &e, d
			}
		}
	}
	s.mu.Unlock()
	if found == nil {
		attioNotFound(w, "Entry", id)
		return
	}
	s.read(Attio, "entry", id)
	parentObject := parent.Object
	if parentObject == "" {
		parentObject = "deals"
	}
	values := map[string]any{}
	if found.Stage != "" {
		values["status"] = []any{attioStatus(found.StageAt, list, found.StageAttribute, found.Stage)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"id":               map[string]any{"workspace_id": "14beef7a-99f7-4534-a87e-70b564330a4c", "list_id": list, "entry_id": id},
		"parent_record_id": parent.ID, "parent_object": parentObject, "created_at": "2022-11-21T13:22:49.061281000Z",
		"entry_values": values}})
}
