package tiktok

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// Sandbox mounts the TikTok Events API emulation on a sandbox.Server (Spec().Sandbox):
//
//	POST /open_api/v1.3/event/track/   the Events API (envelope code 0 or an error code)
//
// It accepts any non-empty Access-Token, or only Options.Platforms["tiktok"].AccessToken when set;
// checks the body against the schema facts and that each event carries a user identifier;
// an event_id counts once per event set and event.
func Sandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, facts: schema.MustLoad(schema.TikTok), own: s.Options().Platform(Name)}
}

type emulator struct {
	*sandbox.Server
	facts *schema.Schema
	own   sandbox.PlatformOptions
}

func (s *emulator) Platform() string { return Name }

func (s *emulator) ResetLocked() {}

func (s *emulator) Route(r *http.Request) http.HandlerFunc {
	if r.URL.Path == "/open_api/v1.3/event/track/" {
		return s.handleTikTok
	}
	return nil
}

var (
	obj    = sandbox.Obj
	arr    = sandbox.Arr
	str    = sandbox.Str
	digits = regexp.MustCompile(`^[0-9]+$`)
)

// tiktokAnswer writes TikTok's envelope.
func (s *emulator) tiktokAnswer(w http.ResponseWriter, status, code int, msg string) {
	s.Lock()
	id := s.NextIDLocked("sandbox-tiktok-request")
	s.Unlock()
	sandbox.WriteJSON(w, status, map[string]any{"code": code, "message": msg, "request_id": id, "data": map[string]any{}})
}

func (s *emulator) handleTikTok(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.Draw(Name)
	token := r.Header.Get("Access-Token")
	switch {
	case token == "":
		s.Refused(Name, 0)
		s.tiktokAnswer(w, http.StatusOK, 40104, "Access token is empty.")
		return
	case f.ExpiredToken || (s.own.AccessToken != "" && token != s.own.AccessToken):
		s.Refused(Name, 0)
		s.tiktokAnswer(w, http.StatusOK, 40105, "Access token is invalid or has expired.")
		return
	}
	switch fl {
	case sandbox.Fault5xx:
		s.tiktokAnswer(w, http.StatusInternalServerError, 50000, "System error.")
		return
	case sandbox.Fault429:
		w.Header().Set("Retry-After", f.RetryAfter())
		s.tiktokAnswer(w, http.StatusOK, 40100, "Too many requests. Please retry in some time.")
		return
	case sandbox.FaultUnknown:
		s.tiktokAnswer(w, http.StatusOK, 41999, "The event set is not ready.")
		return
	case sandbox.FaultSetupIn5xx:
		s.tiktokAnswer(w, http.StatusInternalServerError, 40001, "No permission to operate the event set.")
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(Name, 0)
		s.tiktokAnswer(w, http.StatusOK, 40002, err.Error())
		return
	}
	req := obj(body)
	data := arr(req["data"])
	invalid := func(msg string) {
		s.Refused(Name, len(data))
		s.tiktokAnswer(w, http.StatusOK, 40002, msg)
	}
	if vs := s.facts.Validate("EventTrackRequest", body); len(vs) > 0 {
		invalid(strings.Join(sandbox.ViolationsText(vs, 3), "; "))
		return
	}
	srcID := str(req["event_source_id"])
	if !digits.MatchString(srcID) || f.Lookup.UnknownDataset(srcID) {
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
		if str(ev["event"]) == f.Marker() || (str(ev["event_id"]) != "" && f.RejectsKey(str(ev["event_id"]))) {
			invalid(fmt.Sprintf("Batch.%d.event: rejected (sandbox reject marker)", i))
			return
		}
	}
	if s.BatchReject(Name, f) {
		invalid("data: the batch was rejected (sandbox whole-batch fault)")
		return
	}
	s.Lock()
	for _, e := range data {
		ev := obj(e)
		key := srcID + "/" + str(ev["event"]) + "/"
		if id := str(ev["event_id"]); id != "" {
			key += id
		} else {
			key += s.NextIDLocked("no-event-id")
		}
		kc := s.CountsLocked(Name).Keys[key]
		s.RecordLocked(Name, key, kc == nil || kc.Effective == 0)
	}
	s.CountsLocked(Name).Requests++
	s.Unlock()
	s.Log().Debug("sandbox: tiktok events", zap.String("event_source_id", srcID), zap.Int("events", len(data)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	s.tiktokAnswer(w, http.StatusOK, 0, "OK")
}
