package sandbox

import (
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// tiktokAnswer writes TikTok's envelope.
func (s *Server) tiktokAnswer(w http.ResponseWriter, status, code int, msg string) {
	s.mu.Lock()
	id := s.nextID("sandbox-tiktok-request")
	s.mu.Unlock()
	writeJSON(w, status, map[string]any{"code": code, "message": msg, "request_id": id, "data": map[string]any{}})
}

func (s *Server) handleTikTok(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.draw(TikTok)
	token := r.Header.Get("Access-Token")
	switch {
	case token == "":
		s.refused(TikTok, 0)
		s.tiktokAnswer(w, http.StatusOK, 40104, "Access token is empty.")
		return
	case f.ExpiredToken || (s.opts.TikTokAccessToken != "" && token != s.opts.TikTokAccessToken):
		s.refused(TikTok, 0)
		s.tiktokAnswer(w, http.StatusOK, 40105, "Access token is invalid or has expired.")
		return
	}
	switch fl {
	case fault5xx:
		s.tiktokAnswer(w, http.StatusInternalServerError, 50000, "System error.")
		return
	case fault429:
		w.Header().Set("Retry-After", f.retryAfter())
		s.tiktokAnswer(w, http.StatusOK, 40100, "Too many requests. Please retry in some time.")
		return
	case faultUnknown:
		s.tiktokAnswer(w, http.StatusOK, 41999, "The event set is not ready.")
		return
	case faultSetupIn5xx:
		s.tiktokAnswer(w, http.StatusInternalServerError, 40001, "No permission to operate the event set.")
		return
	}
	_, body, err := readJSON(r)
	if err != nil {
		s.refused(TikTok, 0)
		s.tiktokAnswer(w, http.StatusOK, 40002, err.Error())
		return
	}
	req := obj(body)
	data := arr(req["data"])
	invalid := func(msg string) {
		s.refused(TikTok, len(data))
		s.tiktokAnswer(w, http.StatusOK, 40002, msg)
	}
	if vs := s.schemas[TikTok].Validate("EventTrackRequest", body); len(vs) > 0 {
		invalid(strings.Join(violationsText(vs, 3), "; "))
		return
	}
	srcID := str(req["event_source_id"])
	if !digits.MatchString(srcID) || f.Lookup.unknownDataset(srcID) {
		invalid("event_source_id: Not a valid event set ID")
		return
	}
	if len(data) == 0 || len(data) > 1000 {
		invalid(fmt.Sprintf("data: must hold 1 to 1000 events, got %d", len(data)))
		return
	}
	for i, e := range data {
		ev := obj(e)
		u := obj(ev["user"])
		if len(arr(u["email"]))+len(arr(u["phone"]))+len(arr(u["external_id"])) == 0 && str(u["email"])+str(u["phone"])+str(u["external_id"])+str(u["ttclid"]) == "" {
			invalid(fmt.Sprintf("Batch.%d.user: at least one of email, phone, external_id or ttclid is required", i))
			return
		}
		if str(ev["event"]) == f.marker() || (str(ev["event_id"]) != "" && f.rejectsKey(str(ev["event_id"]))) {
			invalid(fmt.Sprintf("Batch.%d.event: rejected (sandbox reject marker)", i))
			return
		}
	}
	if s.batchReject(TikTok, f) {
		invalid("data: the batch was rejected (sandbox whole-batch fault)")
		return
	}
	s.mu.Lock()
	for _, e := range data {
		ev := obj(e)
		key := srcID + "/" + str(ev["event"]) + "/"
		if id := str(ev["event_id"]); id != "" {
			key += id
		} else {
			key += s.nextID("no-event-id")
		}
		kc := s.counts[TikTok].Keys[key]
		s.recordLocked(TikTok, key, kc == nil || kc.Effective == 0)
	}
	s.counts[TikTok].Requests++
	s.mu.Unlock()
	s.log.Debug("sandbox: tiktok events", zap.String("event_source_id", srcID), zap.Int("events", len(data)))
	if fl == faultTimeout {
		hold(r.Context(), f.timeoutDelay())
	}
	s.tiktokAnswer(w, http.StatusOK, 0, "OK")
}
