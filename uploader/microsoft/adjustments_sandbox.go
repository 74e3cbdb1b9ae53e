package microsoft

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/sandbox"
)

// The emulation of OfflineConversionAdjustments/Apply: an adjustment names an accepted
// conversion by ConversionName, ConversionTime and MicrosoftClickId (or the hashes);
// Retract once (again: ignored, a duplicate), Restate with a newer AdjustmentTime (the same
// or an older one: ignored, a duplicate). Microsoft's error codes for an unknown or
// retracted original are UNCONFIRMED; the sandbox answers with the names of the
// documented unattributed reasons, AdjustmentOriginalNotFound and
// ConversionAlreadyRetracted.

// adjState is what the sandbox knows of one conversion's adjustments.
type adjState struct {
	retracted  bool
	restatedAt time.Time // the latest restatement's adjustment time
}

func (s *emulator) adjLocked(key string) *adjState {
	a := s.adj[key]
	if a == nil {
		a = &adjState{}
		s.adj[key] = a
	}
	return a
}

// handleAdjustments serves OfflineConversionAdjustments/Apply.
func (s *emulator) handleAdjustments(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.Draw(Name)
	if !s.msAuth(w, r, f) {
		return
	}
	switch fl {
	case sandbox.Fault5xx:
		s.msFault(w, http.StatusInternalServerError, "AdApiFaultDetail", 0, "InternalError", "An internal error has occurred.")
		return
	case sandbox.Fault429:
		w.Header().Set("Retry-After", f.RetryAfter())
		s.msFault(w, http.StatusTooManyRequests, "AdApiFaultDetail", 117, "CallRateExceeded",
			"You have exceeded the number of calls that you are allowed to make in a minute. Please reduce the number of calls that you make per minute.")
		return
	}
	_, body, err := sandbox.ReadJSON(r)
	if err != nil {
		s.Refused(Name, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", err.Error())
		return
	}
	adjs := arr(obj(body)["OfflineConversionAdjustments"])
	if vs := s.facts.Validate("ApplyOfflineConversionAdjustmentsRequest", body); len(vs) > 0 {
		s.Refused(Name, len(adjs))
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", strings.Join(sandbox.ViolationsText(vs, 3), "; "))
		return
	}
	if len(adjs) == 0 {
		s.Refused(Name, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4836, "OfflineConversionsNullOrEmpty", "The offline conversion adjustments array is null or empty.")
		return
	}
	now := s.Now()
	account := r.Header.Get("CustomerAccountId")
	partial := []any{}
	fail := func(i int, code, field, msg string) {
		partial = append(partial, map[string]any{"Index": i, "Code": 4800, "ErrorCode": code, "FieldPath": field, "Message": msg, "Type": "BatchError"})
	}
	s.Lock()
	for i, a := range adjs {
		m := obj(a)
		typ, name, click := str(m["AdjustmentType"]), str(m["ConversionName"]), str(m["MicrosoftClickId"])
		at, _ := time.Parse(time.RFC3339Nano, str(m["ConversionTime"]))
		adjAt, _ := time.Parse(time.RFC3339Nano, str(m["AdjustmentTime"]))
		id := click
		if id == "" {
			id = "hashed:" + str(m["HashedEmailAddress"]) + str(m["HashedPhoneNumber"])
		}
		key := account + "/" + name + "/" + id + "/" + at.UTC().Format(time.RFC3339)
		kc := s.CountsLocked(Name).Keys[key]
		st := s.adjLocked(key)
		_, hasValue := m["AdjustmentValue"]
		switch {
		case typ == "Restate" && !hasValue:
			fail(i, "OfflineConversionAdjustmentValueRequired", "AdjustmentValue", "AdjustmentValue is required for a Restate adjustment.")
		case typ == "Retract" && hasValue:
			fail(i, "OfflineConversionAdjustmentValueNotExpected", "AdjustmentValue", "AdjustmentValue must not be set for a Retract adjustment.")
		case adjAt.After(now):
			fail(i, "OfflineConversionFutureAdjustmentTimeCannotBeSet", "AdjustmentTime", "The adjustment time is set to a future date.")
		case !adjAt.After(at):
			fail(i, "OfflineConversionAdjustmentTimeEarlierThanConversionTime", "AdjustmentTime", "The adjustment time is earlier than the conversion time.")
		case kc == nil || kc.Effective == 0:
			fail(i, "AdjustmentOriginalNotFound", "ConversionName", "No offline conversion matches this adjustment (sandbox: the unattributed reason's name).")
		case typ == "Retract":
			s.RecordAdjustmentLocked(Name, typ, key+"/Retract", !st.retracted)
			st.retracted = true
			continue
		case !st.restatedAt.IsZero() && !adjAt.After(st.restatedAt): // Restate: only a newer time counts
			s.RecordAdjustmentLocked(Name, typ, key+"/Restate@"+adjAt.UTC().Format(time.RFC3339), false)
			continue
		case st.retracted:
			fail(i, "ConversionAlreadyRetracted", "AdjustmentType", "The conversion was retracted (sandbox: the unattributed reason's name).")
		default:
			s.RecordAdjustmentLocked(Name, typ, key+"/Restate@"+adjAt.UTC().Format(time.RFC3339), true)
			st.restatedAt = adjAt
			continue
		}
		s.CountsLocked(Name).Rejected++
	}
	s.CountsLocked(Name).Requests++
	s.Unlock()
	s.Log().Debug("sandbox: microsoft offline conversion adjustments", zap.String("account", account), zap.Int("adjustments", len(adjs)), zap.Int("errors", len(partial)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"PartialErrors": partial})
}
