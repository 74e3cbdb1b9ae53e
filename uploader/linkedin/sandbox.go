package linkedin

import (
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

// Sandbox mounts the LinkedIn Conversions API emulation on a sandbox.Server
// (Spec().Sandbox):
//
//	POST /rest/conversionEvents   one event, or BATCH_CREATE (per-element status)
//	POST /oauth/v2/accessToken    the Server's token endpoint
//
// It takes tokens the token endpoint issued, or its fixed Options.Platforms["linkedin"].AccessToken;
// requires an active LinkedIn-Version and Rest.li 2.0.0; validates each element against
// the schema facts, the conversion URN, the 90-day window and a user identifier; an
// eventId counts once per conversion.
func Sandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, facts: schema.MustLoad(schema.LinkedIn), own: s.Options().Platform(Name)}
}

type emulator struct {
	*sandbox.Server
	facts *schema.Schema
	own   sandbox.PlatformOptions
}

func (s *emulator) Platform() string { return Name }

func (s *emulator) ResetLocked() {}

func (s *emulator) Route(r *http.Request) http.HandlerFunc {
	switch r.URL.Path {
	case "/rest/conversionEvents":
		return s.handleLinkedIn
	case "/oauth/v2/accessToken": // LinkedIn's token path
		return s.HandleToken
	}
	return nil
}

var (
	obj = sandbox.Obj
	arr = sandbox.Arr
	str = sandbox.Str
)

// liMaxAge is how old conversionHappenedAt may be.
const liMaxAge = 90 * 24 * time.Hour

var (
	liVersion = regexp.MustCompile(`^20[0-9]{2}(0[1-9]|1[0-2])$`)
	liURN     = regexp.MustCompile(`^urn:lla:llaPartnerConversion:[0-9]+$`)
)

func (s *emulator) liError(w http.ResponseWriter, status, serviceCode int, code, msg string) {
	b := map[string]any{"status": status, "message": msg}
	if code != "" {
		b["code"] = code
	}
	if serviceCode != 0 {
		b["serviceErrorCode"] = serviceCode
	}
	sandbox.WriteJSON(w, status, b)
}

// liVersionActive: a LinkedIn-Version is active from its month until about a year later
// (202510 was sunset on 2026-10-15, 202511 on 2026-11-16).
func liVersionActive(v string, now time.Time) bool {
	if !liVersion.MatchString(v) {
		return false
	}
	y, _ := strconv.Atoi(v[:4])
	m, _ := strconv.Atoi(v[4:])
	release := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
	return !now.Before(release) && now.Before(release.AddDate(1, 0, 15))
}

// liAuth accepts a token the token endpoint issued and has not expired, else the fixed
// PlatformOptions.AccessToken (any non-empty token when that is unset).
func (s *emulator) liAuth(w http.ResponseWriter, r *http.Request, f sandbox.Faults) bool {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.Lock()
	exp, issued := s.TokenLocked(tok)
	expired := f.ExpiredToken || (issued && !s.Now().Before(exp))
	valid := tok != "" && !expired && (issued || s.own.AccessToken == "" || tok == s.own.AccessToken)
	if !valid {
		s.CountsLocked(Name).Refused++
	}
	s.Unlock()
	switch {
	case expired:
		s.liError(w, http.StatusUnauthorized, 65602, "EXPIRED_ACCESS_TOKEN", "The token used in the request has expired")
	case !valid:
		s.liError(w, http.StatusUnauthorized, 65600, "INVALID_ACCESS_TOKEN", "Invalid access token")
	}
	return valid
}

func (s *emulator) handleLinkedIn(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.Draw(Name)
	if !s.liAuth(w, r, f) {
		return
	}
	now := s.Now()
	switch v := r.Header.Get("LinkedIn-Version"); {
	case v == "":
		s.Refused(Name, 0)
		s.liError(w, http.StatusBadRequest, 0, "VERSION_MISSING", "A version must be present. Please specify a version by adding the Name-Version header.")
		return
	case !liVersionActive(v, now):
		s.Refused(Name, 0)
		s.liError(w, http.StatusUpgradeRequired, 0, "NONEXISTENT_VERSION", fmt.Sprintf("Requested version %s is not active", v))
		return
	}
	if r.Header.Get("X-Restli-Protocol-Version") != "2.0.0" {
		s.Refused(Name, 0)
		s.liError(w, http.StatusBadRequest, 0, "ILLEGAL_ARGUMENT", "X-Restli-Protocol-Version must be 2.0.0")
		return
	}
	switch fl {
	case sandbox.Fault5xx:
		s.liError(w, http.StatusInternalServerError, 0, "", "Internal Server Error")
		return
	case sandbox.Fault429:
		w.Header().Set("Retry-After", f.RetryAfter())
		s.liError(w, http.StatusTooManyRequests, 101, "TOO_MANY_REQUESTS", "Resource level throttle limit for calls to this resource is reached.")
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(Name, 0)
		s.liError(w, http.StatusBadRequest, 0, "ILLEGAL_ARGUMENT", err.Error())
		return
	}
	batch := r.Header.Get("X-RestLi-Method") == "BATCH_CREATE"
	var elements []any
	if batch {
		elements = arr(obj(body)["elements"])
	} else {
		elements = []any{body}
	}
	// Validation errors reject the whole request, listing the elements at fault.
	var lines []string
	bad := func(i int, path, msg string) {
		lines = append(lines, fmt.Sprintf("Index: %d, ERROR :: %s :: %s", i, path, msg))
	}
	if batch && (len(elements) == 0 || len(elements) > 5000) {
		s.Refused(Name, len(elements))
		s.liError(w, http.StatusBadRequest, 0, "ILLEGAL_ARGUMENT", fmt.Sprintf("elements: must hold 1 to 5000 elements, got %d", len(elements)))
		return
	}
	for i, e := range elements {
		for _, v := range s.facts.Validate("ConversionEvent", e) {
			bad(i, "/"+strings.ReplaceAll(v.Path, ".", "/"), v.Problem)
		}
		ev := obj(e)
		if c := str(ev["conversion"]); c != "" && !liURN.MatchString(c) {
			bad(i, "/conversion", "must be urn:lla:llaPartnerConversion:<id>")
		}
		if ms, err := strconv.ParseInt(fmt.Sprint(ev["conversionHappenedAt"]), 10, 64); err == nil && now.Sub(time.UnixMilli(ms)) > liMaxAge {
			bad(i, "/conversionHappenedAt", "conversion events older than 90 days are rejected")
		}
		if len(arr(obj(ev["user"])["userIds"])) == 0 && obj(obj(ev["user"])["userInfo"]) == nil {
			bad(i, "/user", "at least one user id or userInfo is required")
		}
	}
	if len(lines) > 0 {
		s.Refused(Name, len(elements))
		s.liError(w, http.StatusUnprocessableEntity, 0, "", strings.Join(lines, "\n")+"\n")
		return
	}
	if s.BatchReject(Name, f) {
		s.Refused(Name, len(elements))
		s.liError(w, http.StatusBadRequest, 0, "", "the request was rejected (sandbox whole-batch fault)")
		return
	}
	out := make([]any, len(elements))
	s.Lock()
	for i, e := range elements {
		ev := obj(e)
		id := str(ev["eventId"])
		if strings.TrimPrefix(str(ev["conversion"]), "urn:lla:llaPartnerConversion:") == f.Marker() || (id != "" && f.RejectsKey(id)) {
			s.CountsLocked(Name).Rejected++
			out[i] = map[string]any{"status": http.StatusBadRequest, "error": map[string]any{"status": 400, "message": "the conversion event was rejected (sandbox reject marker)"}}
			continue
		}
		key := str(ev["conversion"]) + "/"
		if id == "" {
			key += s.NextIDLocked("no-event-id")
		} else {
			key += id
		}
		kc := s.CountsLocked(Name).Keys[key]
		s.RecordLocked(Name, key, kc == nil || kc.Effective == 0)
		out[i] = map[string]any{"status": http.StatusCreated}
	}
	s.CountsLocked(Name).Requests++
	s.Unlock()
	s.Log().Debug("sandbox: linkedin conversion events", zap.Int("events", len(elements)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	if !batch {
		w.WriteHeader(http.StatusCreated)
		return
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"elements": out})
}
