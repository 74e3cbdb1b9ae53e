package sandbox

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// liMaxAge is how old conversionHappenedAt may be.
const liMaxAge = 90 * 24 * time.Hour

var (
	liVersion = regexp.MustCompile(`^20[0-9]{2}(0[1-9]|1[0-2])$`)
	liURN     = regexp.MustCompile(`^urn:lla:llaPartnerConversion:[0-9]+$`)
)

func (s *Server) liError(w http.ResponseWriter, status, serviceCode int, code, msg string) {
	b := map[string]any{"status": status, "message": msg}
	if code != "" {
		b["code"] = code
	}
	if serviceCode != 0 {
		b["serviceErrorCode"] = serviceCode
	}
	writeJSON(w, status, b)
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
// Options.LinkedInAccessToken (any non-empty token when that is unset).
func (s *Server) liAuth(w http.ResponseWriter, r *http.Request, f Faults) bool {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, issued := s.tokens[tok]
	expired := f.ExpiredToken || (issued && !s.now().Before(exp))
	valid := tok != "" && !expired && (issued || s.opts.LinkedInAccessToken == "" || tok == s.opts.LinkedInAccessToken)
	if !valid {
		s.counts[LinkedIn].Refused++
	}
	s.mu.Unlock()
	switch {
	case expired:
		s.liError(w, http.StatusUnauthorized, 65602, "EXPIRED_ACCESS_TOKEN", "The token used in the request has expired")
	case !valid:
		s.liError(w, http.StatusUnauthorized, 65600, "INVALID_ACCESS_TOKEN", "Invalid access token")
	}
	return valid
}

func (s *Server) handleLinkedIn(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.draw(LinkedIn)
	if !s.liAuth(w, r, f) {
		return
	}
	now := s.now()
	switch v := r.Header.Get("LinkedIn-Version"); {
	case v == "":
		s.refused(LinkedIn, 0)
		s.liError(w, http.StatusBadRequest, 0, "VERSION_MISSING", "A version must be present. Please specify a version by adding the LinkedIn-Version header.")
		return
	case !liVersionActive(v, now):
		s.refused(LinkedIn, 0)
		s.liError(w, http.StatusUpgradeRequired, 0, "NONEXISTENT_VERSION", fmt.Sprintf("Requested version %s is not active", v))
		return
	}
	if r.Header.Get("X-Restli-Protocol-Version") != "2.0.0" {
		s.refused(LinkedIn, 0)
		s.liError(w, http.StatusBadRequest, 0, "ILLEGAL_ARGUMENT", "X-Restli-Protocol-Version must be 2.0.0")
		return
	}
	switch fl {
	case fault5xx:
		s.liError(w, http.StatusInternalServerError, 0, "", "Internal Server Error")
		return
	case fault429:
		w.Header().Set("Retry-After", f.retryAfter())
		s.liError(w, http.StatusTooManyRequests, 101, "TOO_MANY_REQUESTS", "Resource level throttle limit for calls to this resource is reached.")
		return
	}
	_, body, err := readJSON(r)
	if err != nil {
		s.refused(LinkedIn, 0)
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
		s.refused(LinkedIn, len(elements))
		s.liError(w, http.StatusBadRequest, 0, "ILLEGAL_ARGUMENT", fmt.Sprintf("elements: must hold 1 to 5000 elements, got %d", len(elements)))
		return
	}
	for i, e := range elements {
		for _, v := range s.schemas[LinkedIn].Validate("ConversionEvent", e) {
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
		s.refused(LinkedIn, len(elements))
		s.liError(w, http.StatusUnprocessableEntity, 0, "", strings.Join(lines, "\n")+"\n")
		return
	}
	if s.batchReject(LinkedIn, f) {
		s.refused(LinkedIn, len(elements))
		s.liError(w, http.StatusBadRequest, 0, "", "the request was rejected (sandbox whole-batch fault)")
		return
	}
	out := make([]any, len(elements))
	s.mu.Lock()
	for i, e := range elements {
		ev := obj(e)
		id := str(ev["eventId"])
		if strings.TrimPrefix(str(ev["conversion"]), "urn:lla:llaPartnerConversion:") == f.marker() || (id != "" && f.rejectsKey(id)) {
			s.counts[LinkedIn].Rejected++
			out[i] = map[string]any{"status": http.StatusBadRequest, "error": map[string]any{"status": 400, "message": "the conversion event was rejected (sandbox reject marker)"}}
			continue
		}
		key := str(ev["conversion"]) + "/"
		if id == "" {
			key += s.nextID("no-event-id")
		} else {
			key += id
		}
		kc := s.counts[LinkedIn].Keys[key]
		s.recordLocked(LinkedIn, key, kc == nil || kc.Effective == 0)
		out[i] = map[string]any{"status": http.StatusCreated}
	}
	s.counts[LinkedIn].Requests++
	s.mu.Unlock()
	s.log.Debug("sandbox: linkedin conversion events", zap.Int("events", len(elements)))
	if fl == faultTimeout {
		hold(r.Context(), f.timeoutDelay())
	}
	if !batch {
		w.WriteHeader(http.StatusCreated)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"elements": out})
}
