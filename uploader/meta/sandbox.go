package meta

import (
	"encoding/json"
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

// Sandbox mounts the Meta Conversions API emulation on a sandbox.Server (Spec().Sandbox):
//
//	POST /{v}/{dataset_id}/events   the Conversions API (events_received, whole-request errors)
//	GET  /{v}/{dataset_id}          the dataset read `destinations test` makes
//
// It accepts any non-empty token, or only Options.Platforms["meta"].AccessToken when set; checks the
// body against the schema facts, the 7-day event_time window, lead_id and fbc formats; and
// deduplicates event_id + event_name per dataset for 48 hours.
func Sandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, facts: schema.MustLoad(schema.Meta), own: s.Options().Platform(Name)}
}

type emulator struct {
	*sandbox.Server
	facts    *schema.Schema
	own      sandbox.PlatformOptions
	metaSeen map[string]time.Time // dedup key → first effective time; under the Server's lock
}

func (s *emulator) Platform() string { return Name }

func (s *emulator) ResetLocked() { s.metaSeen = map[string]time.Time{} }

func (s *emulator) Route(r *http.Request) http.HandlerFunc {
	parts := sandbox.PathParts(r)
	switch {
	case len(parts) == 3 && parts[2] == "events" && graphVersion.MatchString(parts[0]):
		return func(w http.ResponseWriter, r *http.Request) { s.handleMeta(w, r, parts[0], parts[1]) }
	case len(parts) == 2 && r.Method == http.MethodGet && graphVersion.MatchString(parts[0]):
		return func(w http.ResponseWriter, r *http.Request) { s.handleMetaDataset(w, r, parts[0], parts[1]) }
	}
	return nil
}

var (
	obj    = sandbox.Obj
	arr    = sandbox.Arr
	str    = sandbox.Str
	digits = regexp.MustCompile(`^[0-9]+$`)
)

// metaDedupWindow is how long Meta deduplicates an event_id + event_name.
const metaDedupWindow = 48 * time.Hour

// metaMaxAge is how old event_time may be.
const metaMaxAge = 7 * 24 * time.Hour

var (
	graphVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)
	fbcFormat    = regexp.MustCompile(`^fb\.[0-9]+\.[0-9]+\..+$`)
	metaLeadID   = regexp.MustCompile(`^[0-9]{15,17}$`)
)

// metaError writes a Graph API error.
func (s *emulator) metaError(w http.ResponseWriter, status int, typ string, code, subcode int, msg string, transient bool) {
	s.Lock()
	trace := s.NextIDLocked("sandbox-fbtrace")
	s.Unlock()
	e := map[string]any{"message": msg, "type": typ, "code": code, "fbtrace_id": trace}
	if subcode != 0 {
		e["error_subcode"] = subcode
	}
	if transient {
		e["is_transient"] = true
	}
	sandbox.WriteJSON(w, status, map[string]any{"error": e})
}

func (s *emulator) handleMeta(w http.ResponseWriter, r *http.Request, version, dataset string) {
	if r.Method != http.MethodPost || !graphVersion.MatchString(version) {
		http.NotFound(w, r)
		return
	}
	fl, f := s.Draw(Name)
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = r.URL.Query().Get("access_token")
	}
	switch {
	case token == "":
		s.Refused(Name, 0)
		s.metaError(w, http.StatusBadRequest, "OAuthException", 104, 0, "An access token is required to request this resource.", false)
		return
	case f.ExpiredToken:
		s.Refused(Name, 0)
		s.metaError(w, http.StatusBadRequest, "OAuthException", 190, 463, "Error validating access token: Session has expired.", false)
		return
	case s.own.AccessToken != "" && token != s.own.AccessToken:
		s.Refused(Name, 0)
		s.metaError(w, http.StatusBadRequest, "OAuthException", 190, 0, "Invalid OAuth access token - Cannot parse access token", false)
		return
	}
	switch fl {
	case sandbox.Fault5xx:
		s.metaError(w, http.StatusInternalServerError, "OAuthException", 2, 0, "An unexpected error has occurred. Please retry your request later.", true)
		return
	case sandbox.Fault429:
		w.Header().Set("Retry-After", f.RetryAfter())
		s.metaError(w, http.StatusTooManyRequests, "OAuthException", 4, 0, "Application request limit reached", true)
		return
	case sandbox.FaultUnknown:
		s.metaError(w, http.StatusBadRequest, "OAuthException", 2388099, 0, "The dataset is temporarily not ready to receive events. Try again later.", false)
		return
	case sandbox.FaultSetupIn5xx:
		s.metaError(w, http.StatusInternalServerError, "OAuthException", 190, 0, "Error validating access token: The session has been invalidated.", false)
		return
	}
	if !digits.MatchString(dataset) {
		s.Refused(Name, 0)
		s.metaError(w, http.StatusBadRequest, "GraphMethodException", 100, 33,
			fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", dataset), false)
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(Name, 0)
		s.metaError(w, http.StatusBadRequest, "OAuthException", 100, 0, "(#100) "+err.Error(), false)
		return
	}
	data := arr(obj(body)["data"])
	invalid := func(subcode int, msg string) {
		s.Refused(Name, len(data))
		s.metaError(w, http.StatusBadRequest, "OAuthException", 100, subcode, "Invalid parameter: "+msg, false)
	}
	if vs := s.facts.Validate("EventRequest", body); len(vs) > 0 {
		invalid(0, strings.Join(sandbox.ViolationsText(vs, 3), "; "))
		return
	}
	if len(data) == 0 || len(data) > 1000 {
		invalid(0, fmt.Sprintf("data must hold 1 to 1000 events, got %d", len(data)))
		return
	}
	now := s.Now()
	for i, e := range data {
		ev := obj(e)
		n, _ := ev["event_time"].(json.Number)
		t, _ := strconv.ParseInt(n.String(), 10, 64)
		if now.Sub(time.Unix(t, 0)) > metaMaxAge {
			invalid(2804003, fmt.Sprintf("data[%d].event_time: Event sent after seven days.", i))
			return
		}
		if msg := metaUserDataProblem(obj(ev["user_data"])); msg != "" {
			invalid(0, fmt.Sprintf("data[%d].user_data: %s", i, msg))
			return
		}
		if str(ev["event_name"]) == f.Marker() || (str(ev["event_id"]) != "" && f.RejectsKey(str(ev["event_id"]))) {
			invalid(0, fmt.Sprintf("data[%d]: event rejected (sandbox reject marker)", i))
			return
		}
	}
	if s.BatchReject(Name, f) {
		invalid(0, "the batch was rejected (sandbox whole-batch fault)")
		return
	}
	s.Lock()
	for _, e := range data {
		ev := obj(e)
		id := str(ev["event_id"])
		key := dataset + "/" + str(ev["event_name"]) + "/"
		if id == "" {
			s.RecordLocked(Name, key+s.NextIDLocked("no-event-id"), true)
			continue
		}
		key += id
		first, seen := s.metaSeen[key]
		effective := !seen || now.Sub(first) > metaDedupWindow
		if effective {
			s.metaSeen[key] = now
		}
		s.RecordLocked(Name, key, effective)
	}
	s.CountsLocked(Name).Requests++
	trace := s.NextIDLocked("sandbox-fbtrace")
	s.Unlock()
	s.Log().Debug("sandbox: meta events", zap.String("dataset", dataset), zap.Int("events", len(data)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"events_received": len(data), "messages": []any{}, "fbtrace_id": trace})
}

// metaUserDataProblem applies Meta's customer-information rules beyond the schema.
func metaUserDataProblem(u map[string]any) string {
	if len(u) == 0 {
		return "at least one customer information parameter is required"
	}
	if v, ok := u["lead_id"]; ok {
		var s string
		switch x := v.(type) {
		case json.Number:
			s = x.String()
		case string:
			s = x
		}
		if !metaLeadID.MatchString(s) {
			return "lead_id must be the 15 to 17 digit Name lead ID"
		}
	}
	if v := str(u["fbc"]); v != "" && !fbcFormat.MatchString(v) {
		return "fbc must look like fb.1.<creation time>.<fbclid>"
	}
	return ""
}

// handleMetaDataset emulates `GET /{version}/{dataset_id}?fields=id,name`.
func (s *emulator) handleMetaDataset(w http.ResponseWriter, r *http.Request, version, dataset string) {
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
	case s.own.AccessToken != "" && token != s.own.AccessToken:
		s.metaError(w, http.StatusBadRequest, "OAuthException", 190, 0, "Invalid OAuth access token - Cannot parse access token", false)
		return
	}
	if !digits.MatchString(dataset) || f.Lookup.UnknownDataset(dataset) {
		s.metaError(w, http.StatusBadRequest, "GraphMethodException", 100, 33,
			fmt.Sprintf("Unsupported get request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", dataset), false)
		return
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"id": dataset, "name": "Sandbox dataset " + dataset})
}
