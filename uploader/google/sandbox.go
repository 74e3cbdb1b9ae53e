package google

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// DataManagerSandbox mounts the Data Manager API emulation on a sandbox.Server
// (DataManagerSpec().Sandbox):
//
//	POST /v1/events:ingest                        ingest (whole-request validation)
//	GET  /v1/requestStatus:retrieve?requestId=…   request status (PROCESSING for Options.StatusDelay,
//	                                              then SUCCESS, PARTIAL_SUCCESS or FAILED per destination)
//
// AdsSandbox mounts the Google Ads API emulation (AdsSpec().Sandbox):
//
//	POST /{v}/customers/{cid}:uploadClickConversions        partial failure per row
//	POST /{v}/customers/{cid}:uploadConversionAdjustments   retractions
//	POST /{v}/customers/{cid}/googleAds:search              conversion_action and customer lookups
//
// Both take access tokens the Server's /token endpoint issued and answer google.rpc.Status
// errors. A transactionId (Data Manager) or order id (Google Ads) counts once.
func DataManagerSandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, name: DataManagerName, facts: schema.MustLoad(schema.GoogleDataManager)}
}

// AdsSandbox mounts the Google Ads API emulation; see DataManagerSandbox.
func AdsSandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, name: AdsName, facts: schema.MustLoad(schema.GoogleAds)}
}

// emulator is one of the two Google APIs (name says which); they share auth and errors.
type emulator struct {
	*sandbox.Server
	name   string
	facts  *schema.Schema
	dmReqs map[string]*dmRequestState // Data Manager request id → state; under the Server's lock
	ads    map[string]*adsConversion  // Google Ads key → stored conversion; under the Server's lock
	// dmValues is the value and currency each Data Manager conversion holds: a
	// transactionId resent with another one is a restatement (platforms.md §1.6).
	dmValues map[string]string
}

func (s *emulator) Platform() string { return s.name }

func (s *emulator) ResetLocked() {
	s.dmReqs = map[string]*dmRequestState{}
	s.ads = map[string]*adsConversion{}
	s.dmValues = map[string]string{}
}

// dmEventValue is an ingested event's value and currency, as a comparable string.
func dmEventValue(ev map[string]any) string {
	return fmt.Sprint(field(ev, "conversionValue", "conversion_value")) + " " + str(ev["currency"])
}

// dmValueLocked remembers the value a Data Manager conversion was first ingested with.
func (s *emulator) dmValueLocked(key string, ev map[string]any) {
	if s.dmValues[key] == "" {
		s.dmValues[key] = dmEventValue(ev)
	}
}

// dmRestatesLocked counts a resent transactionId carrying another value as a restatement
// and reports true; unchanged it reports false (a duplicate conversion).
func (s *emulator) dmRestatesLocked(key string, ev map[string]any) bool {
	v := dmEventValue(ev)
	if s.dmValues[key] == "" || v == s.dmValues[key] {
		return false
	}
	s.dmValues[key] = v
	s.RecordAdjustmentLocked(DataManagerName, "RESTATEMENT", key+"/RESTATEMENT/"+v, true)
	return true
}

func (s *emulator) Route(r *http.Request) http.HandlerFunc {
	if s.name == DataManagerName {
		switch r.URL.Path {
		case "/v1/events:ingest":
			return s.handleDMIngest
		case "/v1/requestStatus:retrieve":
			return s.handleDMStatus
		}
		return nil
	}
	parts := sandbox.PathParts(r)
	switch {
	case len(parts) == 3 && parts[1] == "customers":
		return func(w http.ResponseWriter, r *http.Request) { s.handleAds(w, r, parts[0], parts[2]) }
	case len(parts) == 4 && parts[1] == "customers" && parts[3] == "googleAds:search":
		return func(w http.ResponseWriter, r *http.Request) { s.handleAdsSearch(w, r, parts[0], parts[2]) }
	}
	return nil
}

// JSON access helpers over values decoded with UseNumber.
func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func arr(v any) []any          { a, _ := v.([]any); return a }

// field returns m[camel], falling back to the proto (snake_case) name.
func field(m map[string]any, camel, snake string) any {
	if v, ok := m[camel]; ok {
		return v
	}
	return m[snake]
}

func str(v any) string { s, _ := v.(string); return s }

var (
	digits      = regexp.MustCompile(`^[0-9]+$`)
	hexSHA256   = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	adsDateTime = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$`)
	actionName  = regexp.MustCompile(`^customers/([0-9]+)/conversionActions/([^/]+)$`)
	currency3   = regexp.MustCompile(`^[A-Za-z]{3}$`)
)

// googleStatus writes a google.rpc.Status error in the REST shape.
func googleStatus(w http.ResponseWriter, httpStatus int, status, message, domain, reason string, violations []violation, extra ...any) {
	details := []any{}
	if reason != "" {
		details = append(details, map[string]any{
			"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain,
		})
	}
	if len(violations) > 0 {
		fv := make([]map[string]string, 0, len(violations))
		for _, v := range violations {
			fv = append(fv, map[string]string{"field": v.Field, "description": v.Description, "reason": v.Reason})
		}
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": fv})
	}
	details = append(details, extra...)
	sandbox.WriteJSON(w, httpStatus, map[string]any{"error": map[string]any{
		"code": httpStatus, "message": message, "status": status, "details": details,
	}})
}

type violation struct {
	Field, Description, Reason string
}

// googleAuth checks the bearer token; it writes the 401 and returns false on failure.
func (s *emulator) googleAuth(w http.ResponseWriter, r *http.Request, p string, f sandbox.Faults) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.Lock()
	exp, known := s.TokenLocked(tok)
	valid := ok && known && s.Now().Before(exp) && !f.ExpiredToken
	if !valid {
		s.CountsLocked(p).Refused++
	}
	s.Unlock()
	if !valid {
		googleStatus(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
			"googleapis.com", "ACCESS_TOKEN_EXPIRED", nil)
	}
	return valid
}

// googleFault writes an injected 5xx/429 in Google's shape; it returns true when it did.
func (s *emulator) googleFault(w http.ResponseWriter, fl sandbox.Fault, f sandbox.Faults, domain string) bool {
	switch fl {
	case sandbox.Fault5xx:
		googleStatus(w, http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable.", domain, "INTERNAL_ERROR", nil)
		return true
	case sandbox.Fault429:
		w.Header().Set("Retry-After", f.RetryAfter())
		googleStatus(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded. Retry later.", domain, "RESOURCE_EXHAUSTED", nil)
		return true
	case sandbox.FaultUnknown:
		googleStatus(w, http.StatusBadRequest, "FAILED_PRECONDITION", "The service is not ready for this account yet.", domain, "SERVICE_NOT_READY", nil)
		return true
	case sandbox.FaultSetupIn5xx:
		googleStatus(w, http.StatusInternalServerError, "PERMISSION_DENIED", "The caller does not have permission.", domain, "PERMISSION_DENIED", nil)
		return true
	}
	return false
}

// --- Data Manager -------------------------------------------------------------------------

type dmRequestState struct {
	created time.Time
	dests   []dmDestState
}

type dmDestState struct {
	dest   map[string]any
	total  int
	failed map[string]int
}

const dmDomain = "datamanager.googleapis.com"

func (s *emulator) handleDMIngest(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.Draw(DataManagerName)
	if !s.googleAuth(w, r, DataManagerName, f) {
		return
	}
	if s.googleFault(w, fl, f, dmDomain) {
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(DataManagerName, 0)
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error(), dmDomain, "INVALID_ARGUMENT", nil)
		return
	}
	events := arr(obj(body)["events"])
	if vs := s.facts.Validate("IngestEventsRequest", body); len(vs) > 0 {
		s.Refused(DataManagerName, len(events))
		var fvs []violation
		for _, v := range vs {
			fvs = append(fvs, violation{Field: v.Path, Description: v.Problem, Reason: "INVALID_FORMAT"})
		}
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			"Request contains an invalid argument: "+strings.Join(sandbox.ViolationsText(vs, 3), "; "), dmDomain, dmSchemaReason(vs), fvs)
		return
	}
	if reason, vs := dmValidate(obj(body), f); len(vs) > 0 {
		s.Refused(DataManagerName, len(events))
		status := http.StatusBadRequest
		googleStatus(w, status, "INVALID_ARGUMENT", "Request contains an invalid argument: "+vs[0].Field+": "+vs[0].Description, dmDomain, reason, vs)
		return
	}
	if s.BatchReject(DataManagerName, f) {
		s.Refused(DataManagerName, len(events))
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", dmDomain, "INVALID_ARGUMENT", nil)
		return
	}
	req := obj(body)
	validateOnly, _ := field(req, "validateOnly", "validate_only").(bool)
	if validateOnly {
		sandbox.WriteJSON(w, http.StatusOK, map[string]any{})
		return
	}
	dests := arr(req["destinations"])
	s.Lock()
	id := s.NextIDLocked("sandbox-dm-request")
	st := &dmRequestState{created: s.Now()}
	refIndex := map[string]int{}
	for i, d := range dests {
		dm := obj(d)
		st.dests = append(st.dests, dmDestState{dest: dm, failed: map[string]int{}})
		if ref := str(dm["reference"]); ref != "" {
			refIndex[ref] = i
		}
	}
	for _, e := range events {
		ev := obj(e)
		targets := []int{}
		for _, ref := range arr(field(ev, "destinationReferences", "destination_references")) {
			targets = append(targets, refIndex[str(ref)])
		}
		if len(targets) == 0 {
			for i := range dests {
				targets = append(targets, i)
			}
		}
		tid := str(field(ev, "transactionId", "transaction_id"))
		for _, i := range targets {
			ds := &st.dests[i]
			ds.total++
			if f.AsyncRejects(tid) {
				ds.failed["PROCESSING_ERROR_REASON_INVALID_EVENT"]++
				s.CountsLocked(DataManagerName).Rejected++
				continue
			}
			op := obj(field(ds.dest, "operatingAccount", "operating_account"))
			key := str(field(op, "accountId", "account_id")) + "/" + str(field(ds.dest, "productDestinationId", "product_destination_id")) + "/"
			if tid != "" {
				key += tid
			} else {
				key += "no-transaction-id/" + s.NextIDLocked("event")
			}
			kc := s.CountsLocked(DataManagerName).Keys[key]
			// Data Manager treats a resent transactionId as an adjustment of the same
			// conversion: received again, no new conversion; with another value it is a
			// restatement.
			if kc != nil && kc.Effective > 0 && s.dmRestatesLocked(key, ev) {
				continue
			}
			s.RecordLocked(DataManagerName, key, kc == nil || kc.Effective == 0)
			s.dmValueLocked(key, ev)
		}
	}
	s.dmReqs[id] = st
	s.CountsLocked(DataManagerName).Requests++
	s.Unlock()
	s.Log().Debug("sandbox: data manager ingest", zap.String("request_id", id), zap.Int("events", len(events)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"requestId": id})
}

// dmSchemaReason picks the ErrorReason for schema violations.
func dmSchemaReason(vs []schema.Violation) string {
	for _, v := range vs {
		if strings.Contains(v.Problem, "required field missing") {
			return "REQUIRED_FIELD_MISSING"
		}
		if strings.Contains(v.Path, "userIdentifiers") && strings.Contains(v.Problem, "at most") {
			return "TOO_MANY_USER_IDENTIFIERS"
		}
	}
	return "INVALID_ARGUMENT"
}

// dmValidate applies Data Manager's rules beyond the schema. It returns the ErrorReason of
// the first problem and every field violation.
func dmValidate(req map[string]any, f sandbox.Faults) (string, []violation) {
	var vs []violation
	reason := ""
	bad := func(r, path, desc string) {
		if reason == "" {
			reason = r
		}
		vs = append(vs, violation{Field: path, Description: desc, Reason: r})
	}
	dests := arr(req["destinations"])
	if len(dests) == 0 {
		bad("REQUIRED_FIELD_MISSING", "destinations", "at least one destination is required")
	}
	if len(dests) > 10 {
		bad("TOO_MANY_DESTINATIONS", "destinations", fmt.Sprintf("at most 10 destinations, got %d", len(dests)))
	}
	refs := map[string]bool{}
	for i, d := range dests {
		dm := obj(d)
		p := fmt.Sprintf("destinations[%d]", i)
		for _, acct := range []struct{ camel, snake string }{{"operatingAccount", "operating_account"}, {"loginAccount", "login_account"}} {
			a := obj(field(dm, acct.camel, acct.snake))
			if a == nil {
				continue
			}
			if t := str(field(a, "accountType", "account_type")); t != "GOOGLE_ADS" {
				bad("INVALID_DESTINATION", p+"."+acct.camel+".accountType", "only GOOGLE_ADS accounts are emulated")
			}
			if id := str(field(a, "accountId", "account_id")); !tenDigits.MatchString(id) {
				bad("INVALID_DESTINATION", p+"."+acct.camel+".accountId", "must be a 10-digit customer ID without hyphens")
			}
		}
		pid := str(field(dm, "productDestinationId", "product_destination_id"))
		if pid == f.Marker() {
			bad("INVALID_DESTINATION", p+".productDestinationId", "conversion action not found")
		} else if !digits.MatchString(pid) {
			bad("INVALID_DESTINATION", p+".productDestinationId", "must be the numeric conversion action ID")
		} else if msg := lookupDestinationProblem(f.Lookup, str(field(obj(field(dm, "operatingAccount", "operating_account")), "accountId", "account_id")), pid, f.Marker()); msg != "" {
			bad("INVALID_DESTINATION", p+".productDestinationId", msg)
		}
		if ref := str(dm["reference"]); ref != "" {
			refs[ref] = true
		}
	}
	events := arr(req["events"])
	if len(events) == 0 {
		bad("REQUIRED_FIELD_MISSING", "events", "at least one event is required")
	}
	if len(events) > 2000 {
		bad("INVALID_ARGUMENT", "events", fmt.Sprintf("at most 2000 events, got %d", len(events)))
	}
	encoding := str(req["encoding"])
	for i, e := range events {
		ev := obj(e)
		p := fmt.Sprintf("events[%d]", i)
		for _, ref := range arr(field(ev, "destinationReferences", "destination_references")) {
			if !refs[str(ref)] {
				bad("INVALID_ARGUMENT", p+".destinationReferences", "names no destination reference")
			}
		}
		ts := str(field(ev, "eventTimestamp", "event_timestamp"))
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			bad("INVALID_FORMAT", p+".eventTimestamp", "must be an RFC 3339 timestamp with a time zone")
		}
		if ad := obj(field(ev, "adIdentifiers", "ad_identifiers")); ad != nil {
			if str(ad["gbraid"]) != "" && str(ad["wbraid"]) != "" {
				bad("INVALID_ARGUMENT", p+".adIdentifiers", "gbraid and wbraid must not both be set")
			}
		}
		if c := str(ev["currency"]); c != "" && !currency3.MatchString(c) {
			bad("INVALID_FORMAT", p+".currency", "must be a 3-letter ISO 4217 code")
		}
		if ud := obj(field(ev, "userData", "user_data")); ud != nil {
			ids := arr(field(ud, "userIdentifiers", "user_identifiers"))
			if len(ids) == 0 {
				bad("REQUIRED_FIELD_MISSING", p+".userData.userIdentifiers", "at least one identifier is required")
			}
			if len(ids) > 10 {
				bad("TOO_MANY_USER_IDENTIFIERS", p+".userData.userIdentifiers", "at most 10 identifiers")
			}
			if encoding == "" {
				bad("REQUIRED_FIELD_MISSING", "encoding", "encoding is required when events carry userData")
			}
			for j, id := range ids {
				idm := obj(id)
				n := 0
				for _, k := range []struct{ camel, snake string }{{"emailAddress", "email_address"}, {"phoneNumber", "phone_number"}} {
					v, ok := field(idm, k.camel, k.snake).(string)
					if !ok {
						continue
					}
					n++
					if r := hashProblem(encoding, v); r != "" {
						bad(r, fmt.Sprintf("%s.userData.userIdentifiers[%d].%s", p, j, k.camel), "must be a SHA-256 digest in the request's encoding")
					}
				}
				if field(idm, "address", "address") != nil {
					n++
				}
				if n != 1 {
					bad("INVALID_ARGUMENT", fmt.Sprintf("%s.userData.userIdentifiers[%d]", p, j), "exactly one of emailAddress, phoneNumber, address")
				}
			}
		}
		tid := str(field(ev, "transactionId", "transaction_id"))
		if tid != "" && f.RejectsKey(tid) {
			bad("INVALID_ARGUMENT", p, "event rejected (sandbox reject key)")
		}
	}
	return reason, vs
}

// hashProblem checks one hashed identifier against the request encoding.
func hashProblem(encoding, v string) string {
	switch encoding {
	case "HEX":
		if _, err := hex.DecodeString(v); err != nil {
			return "INVALID_HEX_ENCODING"
		}
		if !hexSHA256.MatchString(v) {
			return "INVALID_SHA256_FORMAT"
		}
	case "BASE64":
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return "INVALID_FORMAT"
		}
		if len(b) != 32 {
			return "INVALID_SHA256_FORMAT"
		}
	}
	return ""
}

func (s *emulator) handleDMStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.googleAuth(w, r, DataManagerName, s.Faults()) {
		return
	}
	id := r.URL.Query().Get("requestId")
	if id == "" {
		id = r.URL.Query().Get("request_id")
	}
	s.Lock()
	st, ok := s.dmReqs[id]
	now := s.Now()
	s.Unlock()
	if !ok {
		googleStatus(w, http.StatusNotFound, "NOT_FOUND", "Request ID not found.", dmDomain, "", nil)
		return
	}
	out := []map[string]any{}
	for _, d := range st.dests {
		status := "PROCESSING"
		if !now.Before(st.created.Add(s.Options().StatusDelay)) {
			failed := 0
			for _, n := range d.failed {
				failed += n
			}
			switch {
			case failed == 0:
				status = "SUCCESS"
			case failed >= d.total:
				status = "FAILED"
			default:
				status = "PARTIAL_SUCCESS"
			}
		}
		entry := map[string]any{
			"destination":           d.dest,
			"requestStatus":         status,
			"eventsIngestionStatus": map[string]any{"recordCount": strconv.Itoa(d.total)},
		}
		if status != "PROCESSING" && len(d.failed) > 0 {
			counts := []map[string]any{}
			for _, reason := range sandbox.SortedKeys(d.failed) {
				counts = append(counts, map[string]any{"recordCount": strconv.Itoa(d.failed[reason]), "reason": reason})
			}
			entry["errorInfo"] = map[string]any{"errorCounts": counts}
		}
		out = append(out, entry)
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"requestStatusPerDestination": out})
}

// --- Google Ads API -------------------------------------------------------------------------

type adsConversion struct {
	at         time.Time
	retracted  bool
	restatedAt time.Time // the latest restatement's adjustment time
}

// restatementProblem is the error of a Google Ads restatement at adjAt, or "": it needs a
// newer adjustmentDateTime than the last one ("otherwise it is treated as a duplicate",
// platforms.md §1.2): the same time answers RESTATEMENT_ALREADY_EXISTS, an older one
// MORE_RECENT_RESTATEMENT_FOUND.
func (c *adsConversion) restatementProblem(adjAt time.Time) (enum, msg string) {
	switch {
	case c.restatedAt.IsZero() || adjAt.After(c.restatedAt):
		return "", ""
	case adjAt.Equal(c.restatedAt):
		return "RESTATEMENT_ALREADY_EXISTS", "A restatement with this adjustment date time already exists."
	}
	return "MORE_RECENT_RESTATEMENT_FOUND", "A more recent restatement of this conversion exists."
}

const adsDomain = "googleads.googleapis.com"

type adsRowError struct {
	index int
	typ   string
	enum  string
	msg   string
	field string
}

func adsFailure(errs []adsRowError, listField string) map[string]any {
	list := []any{}
	for _, e := range errs {
		loc := []any{}
		if e.index >= 0 {
			loc = append(loc, map[string]any{"fieldName": listField, "index": e.index})
		}
		if e.field != "" {
			loc = append(loc, map[string]any{"fieldName": e.field})
		}
		list = append(list, map[string]any{
			"errorCode": map[string]string{e.typ: e.enum},
			"message":   e.msg,
			"location":  map[string]any{"fieldPathElements": loc},
		})
	}
	return map[string]any{
		"@type":     "type.googleapis.com/google.ads.googleads.v25.errors.GoogleAdsFailure",
		"errors":    list,
		"requestId": "sandbox-ads-request",
	}
}

func (s *emulator) handleAds(w http.ResponseWriter, r *http.Request, version, rest string) {
	cid, method, _ := strings.Cut(rest, ":")
	if r.Method != http.MethodPost || (method != "uploadClickConversions" && method != "uploadConversionAdjustments") {
		http.NotFound(w, r)
		return
	}
	fl, f := s.Draw(AdsName)
	if !s.googleAuth(w, r, AdsName, f) {
		return
	}
	if s.googleFault(w, fl, f, adsDomain) {
		return
	}
	requestError := func(enum, msg string) {
		s.Refused(AdsName, 0)
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "", "", nil,
			adsFailure([]adsRowError{{index: -1, typ: "requestError", enum: enum, msg: msg}}, ""))
	}
	if !regexp.MustCompile(`^v[0-9]+$`).MatchString(version) {
		http.NotFound(w, r)
		return
	}
	if !tenDigits.MatchString(cid) {
		requestError("INVALID_CUSTOMER_ID", "customer ID must be 10 digits")
		return
	}
	if l := r.Header.Get("login-customer-id"); l != "" && !tenDigits.MatchString(l) {
		requestError("INVALID_LOGIN_CUSTOMER_ID", "login-customer-id must be 10 digits")
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(AdsName, 0)
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error(), adsDomain, "", nil)
		return
	}
	root, listKey, listSnake := "UploadClickConversionsRequest", "conversions", "conversions"
	if method == "uploadConversionAdjustments" {
		root, listKey, listSnake = "UploadConversionAdjustmentsRequest", "conversionAdjustments", "conversion_adjustments"
	}
	req := obj(body)
	rows := arr(field(req, listKey, listSnake))
	if vs := s.facts.Validate(root, body); len(vs) > 0 {
		s.Refused(AdsName, len(rows))
		var fvs []violation
		for _, v := range vs {
			fvs = append(fvs, violation{Field: v.Path, Description: v.Problem})
		}
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			"Invalid JSON payload received: "+strings.Join(sandbox.ViolationsText(vs, 3), "; "), adsDomain, "", fvs)
		return
	}
	if pf, _ := field(req, "partialFailure", "partial_failure").(bool); !pf {
		requestError("REQUIRED_FIELD_MISSING", "partialFailure must be true (the sandbox emulates partial-failure mode only)")
		return
	}
	if len(rows) == 0 {
		requestError("REQUIRED_FIELD_MISSING", listKey+" is empty")
		return
	}
	if len(rows) > 2000 {
		enum, typ := "TOO_MANY_CONVERSIONS_IN_REQUEST", "conversionUploadError"
		if method == "uploadConversionAdjustments" {
			enum, typ = "TOO_MANY_ADJUSTMENTS_IN_REQUEST", "conversionAdjustmentUploadError"
		}
		s.Refused(AdsName, len(rows))
		googleStatus(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "", "", nil,
			adsFailure([]adsRowError{{index: -1, typ: typ, enum: enum, msg: "at most 2000 per request"}}, listSnake))
		return
	}
	if s.BatchReject(AdsName, f) {
		requestError("INVALID_INPUT", "sandbox whole-batch rejection")
		return
	}
	validateOnly, _ := field(req, "validateOnly", "validate_only").(bool)
	var errs []adsRowError
	var results []any
	s.Lock()
	if method == "uploadClickConversions" {
		errs, results = s.adsClicksLocked(cid, rows, f, validateOnly)
	} else {
		errs, results = s.adsAdjustmentsLocked(cid, rows, f, validateOnly)
	}
	s.CountsLocked(AdsName).Requests++
	s.CountsLocked(AdsName).Rejected += len(errs)
	s.Unlock()
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	resp := map[string]any{"jobId": "1"}
	if !validateOnly {
		resp["results"] = results
	}
	if len(errs) > 0 {
		msgs := []string{}
		for _, e := range errs {
			msgs = append(msgs, fmt.Sprintf("%s, at %s[%d]", e.msg, listSnake, e.index))
		}
		resp["partialFailureError"] = map[string]any{
			"code": 3, "message": strings.Join(msgs, "; "),
			"details": []any{adsFailure(errs, listSnake)},
		}
	}
	sandbox.WriteJSON(w, http.StatusOK, resp)
}

func (s *emulator) adsClicksLocked(cid string, rows []any, f sandbox.Faults, validateOnly bool) ([]adsRowError, []any) {
	var errs []adsRowError
	results := make([]any, len(rows))
	inRequest := map[string]bool{}
	for i, row := range rows {
		c := obj(row)
		fail := func(enum, msg, fieldName string) {
			typ := "conversionUploadError"
			if enum == "INVALID_FIELD_VALUES_IN_DATE_TIME" {
				typ = "dateError"
			}
			errs = append(errs, adsRowError{index: i, typ: typ, enum: enum, msg: msg, field: fieldName})
			results[i] = map[string]any{}
		}
		m := actionName.FindStringSubmatch(str(field(c, "conversionAction", "conversion_action")))
		gclid, gbraid, wbraid := str(c["gclid"]), str(c["gbraid"]), str(c["wbraid"])
		dt := str(field(c, "conversionDateTime", "conversion_date_time"))
		orderID := str(field(c, "orderId", "order_id"))
		if msg := adsIdentifierProblem(arr(field(c, "userIdentifiers", "user_identifiers"))); msg != "" {
			fail("INVALID_USER_IDENTIFIER", msg, "user_identifiers")
			continue
		}
		switch {
		case m == nil || !digits.MatchString(m[2]) || m[2] == f.Marker():
			fail("NO_CONVERSION_ACTION_FOUND", "The conversion action specified in the upload request cannot be found.", "conversion_action")
			continue
		case !adsDateTime.MatchString(dt):
			fail("INVALID_FIELD_VALUES_IN_DATE_TIME", "The date time must be 'yyyy-mm-dd hh:mm:ss+|-hh:mm'.", "conversion_date_time")
			continue
		case gbraid != "" && wbraid != "":
			fail("GBRAID_WBRAID_BOTH_SET", "gbraid and wbraid cannot both be set.", "wbraid")
			continue
		case gclid == "" && gbraid == "" && wbraid == "" && len(arr(field(c, "userIdentifiers", "user_identifiers"))) == 0:
			fail("CLICK_NOT_FOUND", "No click ID or user identifier to match.", "")
			continue
		case orderID != "" && f.RejectsKey(orderID):
			fail("CLICK_NOT_FOUND", "The click could not be found (sandbox reject key).", "")
			continue
		}
		at, _ := time.Parse("2006-01-02 15:04:05-07:00", dt) // fractional seconds are accepted too
		key := cid + "/" + m[2] + "/"
		if orderID != "" {
			key += orderID
		} else {
			key += "click:" + gclid + gbraid + wbraid + "@" + dt
		}
		if inRequest[key] {
			fail("DUPLICATE_ORDER_ID", "Duplicate order ID in the request.", "order_id")
			continue
		}
		inRequest[key] = true
		if validateOnly {
			results[i] = map[string]any{}
			continue
		}
		if _, ok := s.ads[key]; ok {
			s.RecordLocked(AdsName, key, false)
			enum := "ORDER_ID_ALREADY_IN_USE"
			if orderID == "" {
				enum = "CLICK_CONVERSION_ALREADY_EXISTS"
			}
			errs = append(errs, adsRowError{index: i, typ: "conversionUploadError", enum: enum, msg: "This conversion was already uploaded."})
			results[i] = map[string]any{}
			continue
		}
		s.ads[key] = &adsConversion{at: at}
		s.RecordLocked(AdsName, key, true)
		res := map[string]any{"conversionAction": str(field(c, "conversionAction", "conversion_action")), "conversionDateTime": dt}
		for k, v := range map[string]string{"gclid": gclid, "gbraid": gbraid, "wbraid": wbraid} {
			if v != "" {
				res[k] = v
			}
		}
		results[i] = res
	}
	return errs, results
}

func adsIdentifierProblem(ids []any) string {
	for _, id := range ids {
		m := obj(id)
		for _, k := range []struct{ camel, snake string }{{"hashedEmail", "hashed_email"}, {"hashedPhoneNumber", "hashed_phone_number"}} {
			if v, ok := field(m, k.camel, k.snake).(string); ok && !hexSHA256.MatchString(v) {
				return k.camel + " must be a hex SHA-256 digest"
			}
		}
		if field(m, "addressInfo", "address_info") != nil || m["mobileId"] != nil || m["thirdPartyUserId"] != nil {
			return "click conversions accept only hashedEmail and hashedPhoneNumber"
		}
	}
	return ""
}

func (s *emulator) adsAdjustmentsLocked(cid string, rows []any, f sandbox.Faults, validateOnly bool) ([]adsRowError, []any) {
	var errs []adsRowError
	results := make([]any, len(rows))
	for i, row := range rows {
		a := obj(row)
		fail := func(enum, msg string) {
			errs = append(errs, adsRowError{index: i, typ: "conversionAdjustmentUploadError", enum: enum, msg: msg})
			results[i] = map[string]any{}
		}
		m := actionName.FindStringSubmatch(str(field(a, "conversionAction", "conversion_action")))
		orderID := str(field(a, "orderId", "order_id"))
		typ := str(field(a, "adjustmentType", "adjustment_type"))
		dt := str(field(a, "adjustmentDateTime", "adjustment_date_time"))
		switch {
		case m == nil || !digits.MatchString(m[2]) || m[2] == f.Marker():
			fail("NO_CONVERSION_ACTION_FOUND", "The conversion action cannot be found.")
			continue
		case !adsDateTime.MatchString(dt):
			errs = append(errs, adsRowError{index: i, typ: "dateError", enum: "INVALID_FIELD_VALUES_IN_DATE_TIME", msg: "bad adjustment_date_time"})
			results[i] = map[string]any{}
			continue
		case orderID != "" && field(a, "gclidDateTimePair", "gclid_date_time_pair") != nil:
			fail("GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET", "Use orderId or gclidDateTimePair, not both.")
			continue
		case typ == "RETRACTION" && field(a, "restatementValue", "restatement_value") != nil:
			fail("RESTATEMENT_VALUE_SET_FOR_RETRACTION", "restatementValue must not be set for a retraction.")
			continue
		case typ == "RESTATEMENT" && field(a, "restatementValue", "restatement_value") == nil:
			errs = append(errs, adsRowError{index: i, typ: "fieldError", enum: "REQUIRED", msg: "restatementValue is required for a restatement.", field: "restatement_value"})
			results[i] = map[string]any{}
			continue
		case orderID != "" && f.RejectsKey(orderID):
			fail("CONVERSION_NOT_FOUND", "The conversion could not be found (sandbox reject key).")
			continue
		}
		key := cid + "/" + m[2] + "/" + orderID
		conv, ok := s.ads[key]
		if !ok {
			fail("CONVERSION_NOT_FOUND", "The conversion for this adjustment could not be found.")
			continue
		}
		adjAt, _ := time.Parse("2006-01-02 15:04:05-07:00", dt)
		if !adjAt.After(conv.at) {
			fail("ADJUSTMENT_PRECEDES_CONVERSION", "The adjustment date time precedes the conversion.")
			continue
		}
		if conv.retracted {
			if typ == "RETRACTION" && !validateOnly {
				s.RecordAdjustmentLocked(AdsName, typ, key+"/"+typ, false)
			}
			fail("CONVERSION_ALREADY_RETRACTED", "The conversion was already retracted.")
			continue
		}
		if typ == "RESTATEMENT" {
			if enum, msg := conv.restatementProblem(adjAt); enum != "" {
				if !validateOnly {
					s.RecordAdjustmentLocked(AdsName, typ, key+"/"+typ+"@"+dt, false)
				}
				fail(enum, msg)
				continue
			}
		}
		if validateOnly {
			results[i] = map[string]any{}
			continue
		}
		switch typ {
		case "RETRACTION":
			conv.retracted = true
			s.RecordAdjustmentLocked(AdsName, typ, key+"/"+typ, true)
		case "RESTATEMENT":
			conv.restatedAt = adjAt
			s.RecordAdjustmentLocked(AdsName, typ, key+"/"+typ+"@"+dt, true)
		}
		results[i] = map[string]any{"orderId": orderID, "conversionAction": str(field(a, "conversionAction", "conversion_action")),
			"adjustmentDateTime": dt, "adjustmentType": typ}
	}
	return errs, results
}
