package crmsandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CRMs the sandbox emulates.
const (
	HubSpot    = "hubspot"
	Pipedrive  = "pipedrive"
	Close      = "close"
	Salesforce = "salesforce"
	Attio      = "attio"
)

// Tokens the sandbox accepts, per CRM (HubSpot private-app bearer token, Pipedrive
// x-api-token, Close API key as the basic-auth user name).
const (
	HubSpotToken   = "sandbox-hubspot-token"
	PipedriveToken = "sandbox-pipedrive-token"
	CloseAPIKey    = "sandbox-close-key"
	AttioToken     = "sandbox-attio-token"
	// Salesforce's OAuth client and refresh token; the sandbox issues access tokens.
	SalesforceClientID     = "sandbox-sf-client"
	SalesforceClientSecret = "sandbox-sf-secret"
	SalesforceRefreshToken = "sandbox-sf-refresh"
)

// Deal is one deal (Pipedrive, HubSpot) or opportunity (Close). Amount is a decimal in
// currency units (the sandbox renders Close's in cents). For Close, LeadID names the lead
// whose contacts are the opportunity's; ContactIDs then lists the lead's contacts.
type Deal struct {
	ID         string
	Amount     string
	Currency   string
	ContactIDs []string
	LeadID     string
	// Attio: the record's object (id or slug, default "deals"), its stage (a status
	// attribute: the title, the attribute's id, since when). Entries lists the record's
	// list entries, each with its own stage.
	Object         string
	Stage          string
	StageAttribute string
	StageAt        time.Time
	Entries        []Entry
}

// Entry is an Attio list entry of a record, whose status attribute is its stage.
type Entry struct {
	List, ID       string
	Stage          string
	StageAttribute string
	StageAt        time.Time
}

// Contact is a HubSpot contact, a Pipedrive person or a Close contact.
type Contact struct {
	ID       string
	Emails   []string
	Phones   []string
	ClickIDs map[string]string // HubSpot only: gclid, fbclid (stored as hs_google_click_id, hs_facebook_click_id)
}

// Fault is injected into the next Times requests to one CRM (0 = every request until
// cleared), once After requests have been answered normally: Status (429, 500, 503, 401,
// 403, 404) answered instead of the real response, after Delay. A Status of 0 with a Delay
// only slows the answers. RetryAfter is what the 429 tells the client to wait, in the
// CRM's own header (default 1s).
type Fault struct {
	Status     int
	Times      int
	After      int
	Delay      time.Duration
	RetryAfter time.Duration
}

// Server emulates the CRMs. The zero value is not usable; call New.
type Server struct {
	mu       sync.Mutex
	deals    map[string]map[string]Deal
	contacts map[string]map[string]Contact
	faults   map[string][]Fault
	requests map[string]int // crm → requests answered (faults included)
	reads    map[string]int // crm/kind/id → times the object was returned
	sfTokens map[string]bool
	sfIssued int
	// sfSingleCurrency: the Salesforce org has no CurrencyIsoCode field.
	sfSingleCurrency bool
	mux              *http.ServeMux
}

// New returns an empty sandbox.
func New() *Server {
	s := &Server{
		deals: map[string]map[string]Deal{}, contacts: map[string]map[string]Contact{},
		faults: map[string][]Fault{}, requests: map[string]int{}, reads: map[string]int{},
		sfTokens: map[string]bool{}, mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("POST /crm/v3/objects/deals/batch/read", s.hubspotDeals)
	s.mux.HandleFunc("POST /crm/v4/associations/deals/contacts/batch/read", s.hubspotAssociations)
	s.mux.HandleFunc("POST /crm/v3/objects/contacts/batch/read", s.hubspotContacts)
	s.mux.HandleFunc("GET /api/v2/deals/{id}", s.pipedriveDeal)
	s.mux.HandleFunc("GET /api/v2/persons/{id}", s.pipedrivePerson)
	s.mux.HandleFunc("GET /api/v1/opportunity/{id}/", s.closeOpportunity)
	s.mux.HandleFunc("GET /api/v1/lead/{id}/", s.closeLead)
	s.mux.HandleFunc("POST /services/oauth2/token", s.salesforceToken)
	s.mux.HandleFunc("GET /services/data/{version}/query", s.salesforceQuery)
	s.mux.HandleFunc("GET /v2/objects/{object}/records/{id}", s.attioRecord)
	s.mux.HandleFunc("GET /v2/lists/{list}/entries/{id}", s.attioEntry)
	return s
}

// AddDeal stores (or replaces) a deal of crm.
func (s *Server) AddDeal(crm string, d Deal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deals[crm] == nil {
		s.deals[crm] = map[string]Deal{}
	}
	s.deals[crm][d.ID] = d
}

// AddContact stores (or replaces) a contact of crm.
func (s *Server) AddContact(crm string, c Contact) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.contacts[crm] == nil {
		s.contacts[crm] = map[string]Contact{}
	}
	s.contacts[crm][c.ID] = c
}

// Inject queues a fault for crm's next requests; faults apply in the order queued.
func (s *Server) Inject(crm string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[crm] = append(s.faults[crm], f)
}

// Clear removes crm's pending faults.
func (s *Server) Clear(crm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.faults, crm)
}

// Requests is how many requests crm answered, faults included.
func (s *Server) Requests(crm string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[crm]
}

// Reads is how many times crm returned the object kind ("deal", "contact",
// "association", "lead") id.
func (s *Server) Reads(crm, kind, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[crm+"/"+kind+"/"+id]
}

// MaxReads is the largest number of times crm returned any one object of kind, and how
// many distinct objects of that kind were returned.
func (s *Server) MaxReads(crm, kind string) (most, objects int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := crm + "/" + kind + "/"
	for k, n := range s.reads {
		if strings.HasPrefix(k, prefix) {
			objects++
			most = max(most, n)
		}
	}
	return most, objects
}

// TotalReads is how many times crm returned objects of kind, all ids together.
func (s *Server) TotalReads(crm, kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := crm + "/" + kind + "/"
	n := 0
	for k, c := range s.reads {
		if strings.HasPrefix(k, prefix) {
			n += c
		}
	}
	return n
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// begin counts the request, checks auth and applies the next fault; false means the
// response has been written.
func (s *Server) begin(crm string, w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	s.requests[crm]++
	var f Fault
	if q := s.faults[crm]; len(q) > 0 && q[0].After > 0 {
		q[0].After--
	} else if len(q) > 0 {
		f = q[0]
		if f.Times > 0 {
			q[0].Times--
			if q[0].Times == 0 {
				s.faults[crm] = q[1:]
			}
		}
	}
	s.mu.Unlock()
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return false
		}
	}
	if !s.authorized(crm, r) {
		f.Status = http.StatusUnauthorized
	}
	if f.Status == 0 {
		return true
	}
	writeFault(crm, w, f)
	return false
}

func (s *Server) authorized(crm string, r *http.Request) bool {
	if crm == Salesforce {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		defer s.mu.Unlock()
		return ok && s.sfTokens[tok]
	}
	return authorized(crm, r)
}

func authorized(crm string, r *http.Request) bool {
	switch crm {
	case HubSpot:
		return r.Header.Get("Authorization") == "Bearer "+HubSpotToken
	case Pipedrive:
		return r.Header.Get("x-api-token") == PipedriveToken
	case Close:
		user, _, ok := r.BasicAuth()
		return ok && user == CloseAPIKey
	case Attio:
		return r.Header.Get("Authorization") == "Bearer "+AttioToken
	}
	return false
}

// writeFault answers as crm does for the fault's status.
func writeFault(crm string, w http.ResponseWriter, f Fault) {
	wait := f.RetryAfter
	if wait <= 0 {
		wait = time.Second
	}
	secs := strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second)))
	h := w.Header()
	var body any
	switch crm {
	case HubSpot:
		switch f.Status {
		case http.StatusTooManyRequests:
			h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", strconv.FormatInt(wait.Milliseconds(), 10))
			h.Set("X-HubSpot-RateLimit-Max", "100")
			h.Set("X-HubSpot-RateLimit-Remaining", "0")
			body = map[string]any{"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT", "policyName": "SECONDLY", "correlationId": "c0ffee"}
		case http.StatusUnauthorized:
			body = map[string]any{"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION", "correlationId": "c0ffee"}
		default:
			body = map[string]any{"status": "error", "message": http.StatusText(f.Status), "category": "INTERNAL_ERROR", "correlationId": "c0ffee"}
		}
	case Pipedrive:
		if f.Status == http.StatusTooManyRequests {
			h.Set("Retry-After", secs)
			h.Set("x-ratelimit-limit", "40")
			h.Set("x-ratelimit-remaining", "0")
			h.Set("x-ratelimit-reset", secs)
		}
		body = map[string]any{"success": false, "error": http.StatusText(f.Status), "error_info": "Please check developers.pipedrive.com", "data": nil, "additional_data": nil}
	case Close:
		if f.Status == http.StatusTooManyRequests {
			h.Set("Retry-After", secs)
			h.Set("RateLimit", "limit=20, remaining=0, reset="+secs)
			body = map[string]any{"error": map[string]any{"rate_reset": wait.Seconds(), "message": "API call count exceeded for this period", "rate_limit": 20, "rate_window": 1}}
		} else {
			body = map[string]any{"error": http.StatusText(f.Status)}
		}
	case Salesforce:
		status := f.Status
		switch f.Status {
		case http.StatusTooManyRequests:
			// Salesforce's own limit answer: the org's API allocation is used up.
			status = http.StatusForbidden
			body = []map[string]any{{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}}
		case http.StatusUnauthorized:
			body = []map[string]any{{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}}
		case http.StatusForbidden:
			body = []map[string]any{{"message": "The REST API is not enabled for this Organization.", "errorCode": "API_DISABLED_FOR_ORG"}}
		case http.StatusNotFound:
			body = []map[string]any{{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}}
		default:
			body = []map[string]any{{"message": http.StatusText(f.Status), "errorCode": "SERVER_UNAVAILABLE"}}
		}
		writeJSON(w, status, body)
		return
	case Attio:
		code, typ := "server_error", "api_error"
		switch f.Status {
		case http.StatusTooManyRequests:
			h.Set("Retry-After", time.Now().Add(wait).UTC().Format(http.TimeFormat))
			code, typ = "rate_limit_exceeded", "rate_limit_error"
		case http.StatusUnauthorized:
			code, typ = "unauthorized", "auth_error"
		case http.StatusForbidden:
			code, typ = "forbidden", "auth_error"
		case http.StatusNotFound:
			code, typ = "not_found", "invalid_request_error"
		}
		body = map[string]any{"status_code": f.Status, "type": typ, "code": code, "message": http.StatusText(f.Status)}
	}
	writeJSON(w, f.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) read(crm, kind, id string) {
	s.mu.Lock()
	s.reads[crm+"/"+kind+"/"+id]++
	s.mu.Unlock()
}

func (s *Server) deal(crm, id string) (Deal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.deals[crm][id]
	return d, ok
}

func (s *Server) contact(crm, id string) (Contact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[crm][id]
	return c, ok
}

// ---- HubSpot ----

// hubspotBatchMax is HubSpot's limit of inputs per batch read.
const hubspotBatchMax = 100

type hubspotBatchRequest struct {
	Properties []string `json:"properties"`
	Inputs     []struct {
		ID string `json:"id"`
	} `json:"inputs"`
}

func (s *Server) hubspotBatch(w http.ResponseWriter, r *http.Request) (hubspotBatchRequest, bool) {
	var req hubspotBatchRequest
	if !s.begin(HubSpot, w, r) {
		return req, false
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Inputs) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "error", "message": "Invalid input JSON", "category": "VALIDATION_ERROR"})
		return req, false
	}
	if len(req.Inputs) > hubspotBatchMax {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "error", "category": "VALIDATION_ERROR",
			"message": fmt.Sprintf("Batch input limit is %d, got %d", hubspotBatchMax, len(req.Inputs))})
		return req, false
	}
	return req, true
}

// hubspotAnswer writes a batch response: 200 when every id was found, 207 with an
// OBJECT_NOT_FOUND error naming the missing ids otherwise.
func hubspotAnswer(w http.ResponseWriter, results []map[string]any, missing []string) {
	body := map[string]any{"status": "COMPLETE", "results": results,
		"startedAt": "2024-05-01T10:00:00.000Z", "completedAt": "2024-05-01T10:00:00.100Z"}
	status := http.StatusOK
	if len(missing) > 0 {
		status = http.StatusMultiStatus
		body["numErrors"] = 1
		body["errors"] = []map[string]any{{"status": "error", "category": "OBJECT_NOT_FOUND",
			"message": "Could not get some objects, they may be deleted or not exist.", "context": map[string]any{"ids": missing}}}
	}
	if results == nil {
		body["results"] = []any{}
	}
	writeJSON(w, status, body)
}

func (s *Server) hubspotDeals(w http.ResponseWriter, r *http.Request) {
	req, ok := s.hubspotBatch(w, r)
	if !ok {
		return
	}
	var results []map[string]any
	var missing []string
	for _, in := range req.Inputs {
		d, ok := s.deal(HubSpot, in.ID)
		if !ok {
			missing = append(missing, in.ID)
			continue
		}
		s.read(HubSpot, "deal", in.ID)
		props := map[string]any{"hs_object_id": d.ID, "dealstage": "closedwon", "pipeline": "default"}
		for _, p := range req.Properties {
			switch p {
			case "amount":
				props[p] = d.Amount
			case "deal_currency_code":
				props[p] = d.Currency
			}
		}
		results = append(results, map[string]any{"id": d.ID, "properties": props, "archived": false,
			"createdAt": "2024-04-01T10:00:00.000Z", "updatedAt": "2024-05-01T10:00:00.000Z"})
	}
	hubspotAnswer(w, results, missing)
}

func (s *Server) hubspotAssociations(w http.ResponseWriter, r *http.Request) {
	req, ok := s.hubspotBatch(w, r)
	if !ok {
		return
	}
	var results []map[string]any
	var missing []string
	for _, in := range req.Inputs {
		d, ok := s.deal(HubSpot, in.ID)
		if !ok {
			missing = append(missing, in.ID)
			continue
		}
		s.read(HubSpot, "association", in.ID)
		to := []map[string]any{}
		for _, c := range d.ContactIDs {
			n, _ := strconv.ParseInt(c, 10, 64)
			to = append(to, map[string]any{"toObjectId": n, "associationTypes": []map[string]any{{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": nil}}})
		}
		results = append(results, map[string]any{"from": map[string]any{"id": d.ID}, "to": to})
	}
	hubspotAnswer(w, results, missing)
}

func (s *Server) hubspotContacts(w http.ResponseWriter, r *http.Request) {
	req, ok := s.hubspotBatch(w, r)
	if !ok {
		return
	}
	var results []map[string]any
	var missing []string
	for _, in := range req.Inputs {
		c, ok := s.contact(HubSpot, in.ID)
		if !ok {
			missing = append(missing, in.ID)
			continue
		}
		s.read(HubSpot, "contact", in.ID)
		props := map[string]any{"hs_object_id": c.ID}
		for _, p := range req.Properties {
			switch p {
			case "email":
				props[p] = first(c.Emails, 0)
			case "phone":
				props[p] = first(c.Phones, 0)
			case "mobilephone":
				props[p] = first(c.Phones, 1)
			case "hs_google_click_id":
				props[p] = nullable(c.ClickIDs["gclid"])
			case "hs_facebook_click_id":
				props[p] = nullable(c.ClickIDs["fbclid"])
			}
		}
		results = append(results, map[string]any{"id": c.ID, "properties": props, "archived": false})
	}
	hubspotAnswer(w, results, missing)
}

func first(list []string, i int) any {
	if i < len(list) {
		return list[i]
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ---- Pipedrive ----

func (s *Server) pipedriveDeal(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Pipedrive, w, r) {
		return
	}
	id := r.PathValue("id")
	d, ok := s.deal(Pipedrive, id)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"success": false, "error": "Deal not found", "error_info": "Please check developers.pipedrive.com", "data": nil})
		return
	}
	s.read(Pipedrive, "deal", id)
	n, _ := strconv.Atoi(d.ID)
	data := map[string]any{"id": n, "title": "Deal " + d.ID, "value": json.Number(orZero(d.Amount)), "currency": d.Currency,
		"status": "won", "stage_id": 9, "pipeline_id": 2, "person_id": nil, "org_id": nil}
	if len(d.ContactIDs) > 0 {
		p, _ := strconv.Atoi(d.ContactIDs[0])
		data["person_id"] = p
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": data})
}

// jsonNumber renders a decimal string as a JSON number.
func jsonNumber(s string) json.Number { return json.Number(orZero(s)) }

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func (s *Server) pipedrivePerson(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Pipedrive, w, r) {
		return
	}
	id := r.PathValue("id")
	c, ok := s.contact(Pipedrive, id)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"success": false, "error": "Person not found", "data": nil})
		return
	}
	s.read(Pipedrive, "contact", id)
	n, _ := strconv.Atoi(c.ID)
	emails, phones := []map[string]any{}, []map[string]any{}
	for i, e := range c.Emails {
		emails = append(emails, map[string]any{"value": e, "primary": i == 0, "label": "work"})
	}
	for i, p := range c.Phones {
		phones = append(phones, map[string]any{"value": p, "primary": i == 0, "label": "mobile"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"id": n, "name": "Person " + c.ID, "emails": emails, "phones": phones}})
}

// ---- Close ----

func (s *Server) closeOpportunity(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Close, w, r) {
		return
	}
	id := r.PathValue("id")
	d, ok := s.deal(Close, id)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "Empty query: Opportunity matching query does not exist."})
		return
	}
	s.read(Close, "deal", id)
	cents := json.Number("0")
	if d.Amount != "" {
		f, _ := strconv.ParseFloat(d.Amount, 64)
		cents = json.Number(strconv.FormatInt(int64(f*100+0.5), 10))
	}
	body := map[string]any{"id": d.ID, "lead_id": d.LeadID, "value": cents, "value_currency": d.Currency,
		"value_period": "one_time", "status_type": "won", "status_id": "stat_won", "contact_id": nil}
	if len(d.ContactIDs) > 0 {
		body["contact_id"] = d.ContactIDs[0]
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) closeLead(w http.ResponseWriter, r *http.Request) {
	if !s.begin(Close, w, r) {
		return
	}
	id := r.PathValue("id")
	var lead *Deal
	s.mu.Lock()
	for _, d := range s.deals[Close] {
		if d.LeadID == id {
			d := d
			lead = &d
			break
		}
	}
	s.mu.Unlock()
	if lead == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "Empty query: Lead matching query does not exist."})
		return
	}
	s.read(Close, "lead", id)
	contacts := []map[string]any{}
	for _, cid := range lead.ContactIDs {
		c, ok := s.contact(Close, cid)
		if !ok {
			continue
		}
		emails, phones := []map[string]any{}, []map[string]any{}
		for _, e := range c.Emails {
			emails = append(emails, map[string]any{"email": e, "type": "office"})
		}
		for _, p := range c.Phones {
			phones = append(phones, map[string]any{"phone": p, "type": "mobile"})
		}
		contacts = append(contacts, map[string]any{"id": c.ID, "lead_id": id, "emails": emails, "phones": phones})
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "display_name": "Lead " + id, "contacts": contacts})
}
