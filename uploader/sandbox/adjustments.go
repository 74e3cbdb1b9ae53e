package sandbox

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Adjustments: retractions and restatements of conversions the sandbox accepted, counted
// apart from the conversions (Counts.Retracted, Restated, AdjustmentDuplicates and per key
// Adjustments), so a test sees each adjustment applied once.
//
//   - Google Ads uploadConversionAdjustments (google.go): RETRACTION once per conversion
//     (again: CONVERSION_ALREADY_RETRACTED, a duplicate); RESTATEMENT needs a newer
//     adjustmentDateTime than the last one ("otherwise it is treated as a duplicate",
//     platforms.md §1.2): the same time answers RESTATEMENT_ALREADY_EXISTS, an older one
//     MORE_RECENT_RESTATEMENT_FOUND, both duplicates.
//   - Data Manager: a transactionId resent with another conversionValue or currency is a
//     restatement (platforms.md §1.6); resent unchanged it is a duplicate conversion.
//   - Microsoft OfflineConversionAdjustments/Apply: an adjustment names an accepted
//     conversion by ConversionName, ConversionTime and MicrosoftClickId (or the hashes);
//     Retract once (again: ignored, a duplicate), Restate with a newer AdjustmentTime
//     (the same or an older one: ignored, a duplicate). Microsoft's error codes for an
//     unknown or retracted original are UNCONFIRMED; the sandbox answers with the names of
//     the documented unattributed reasons, AdjustmentOriginalNotFound and
//     ConversionAlreadyRetracted.

// adjState is what the sandbox knows of one conversion's adjustments.
type adjState struct {
	retracted  bool
	restatedAt time.Time // the latest restatement's adjustment time
	value      string    // Data Manager: the value and currency the conversion holds
}

func (s *Server) adjLocked(p, key string) *adjState {
	a := s.adj[p+"/"+key]
	if a == nil {
		a = &adjState{}
		s.adj[p+"/"+key] = a
	}
	return a
}

// recordAdjustmentLocked counts one adjustment of kind (RETRACTION/Retract or
// RESTATEMENT/Restate) under its dedup key; effective false is a duplicate.
func (s *Server) recordAdjustmentLocked(p, kind, key string, effective bool) {
	c := s.counts[p]
	kc := c.Adjustments[key]
	if kc == nil {
		kc = &KeyCount{}
		c.Adjustments[key] = kc
	}
	kc.Received++
	if !effective {
		c.AdjustmentDuplicates++
		return
	}
	kc.Effective++
	if strings.EqualFold(kind, "RETRACTION") || strings.EqualFold(kind, "Retract") {
		c.Retracted++
	} else {
		c.Restated++
	}
}

// adsRestatementProblemLocked is the error of a Google Ads restatement at adjAt of key, or "".
func (s *Server) adsRestatementProblemLocked(key string, adjAt time.Time) (enum, msg string) {
	a := s.adjLocked(GoogleAds, key)
	switch {
	case a.restatedAt.IsZero() || adjAt.After(a.restatedAt):
		return "", ""
	case adjAt.Equal(a.restatedAt):
		return "RESTATEMENT_ALREADY_EXISTS", "A restatement with this adjustment date time already exists."
	}
	return "MORE_RECENT_RESTATEMENT_FOUND", "A more recent restatement of this conversion exists."
}

func (s *Server) adsRestatedLocked(key string, adjAt time.Time) {
	s.adjLocked(GoogleAds, key).restatedAt = adjAt
}

// dmEventValue is an ingested event's value and currency, as a comparable string.
func dmEventValue(ev map[string]any) string {
	return fmt.Sprint(field(ev, "conversionValue", "conversion_value")) + " " + str(ev["currency"])
}

// dmValueLocked remembers the value a Data Manager conversion was first ingested with.
func (s *Server) dmValueLocked(key string, ev map[string]any) {
	if a := s.adjLocked(Google, key); a.value == "" {
		a.value = dmEventValue(ev)
	}
}

// dmRestatesLocked counts a resent transactionId carrying another value as a restatement
// and reports true; unchanged it reports false (a duplicate conversion).
func (s *Server) dmRestatesLocked(key string, ev map[string]any) bool {
	a := s.adjLocked(Google, key)
	v := dmEventValue(ev)
	if a.value == "" || v == a.value {
		return false
	}
	a.value = v
	s.recordAdjustmentLocked(Google, "RESTATEMENT", key+"/RESTATEMENT/"+v, true)
	return true
}

// handleMicrosoftAdjustments serves OfflineConversionAdjustments/Apply.
func (s *Server) handleMicrosoftAdjustments(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fl, f := s.draw(Microsoft)
	if !s.msAuth(w, r, f) {
		return
	}
	switch fl {
	case fault5xx:
		s.msFault(w, http.StatusInternalServerError, "AdApiFaultDetail", 0, "InternalError", "An internal error has occurred.")
		return
	case fault429:
		w.Header().Set("Retry-After", f.retryAfter())
		s.msFault(w, http.StatusTooManyRequests, "AdApiFaultDetail", 117, "CallRateExceeded",
			"You have exceeded the number of calls that you are allowed to make in a minute. Please reduce the number of calls that you make per minute.")
		return
	}
	_, body, err := readJSON(r)
	if err != nil {
		s.refused(Microsoft, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", err.Error())
		return
	}
	adjs := arr(obj(body)["OfflineConversionAdjustments"])
	if vs := s.schemas[Microsoft].Validate("ApplyOfflineConversionAdjustmentsRequest", body); len(vs) > 0 {
		s.refused(Microsoft, len(adjs))
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", strings.Join(violationsText(vs, 3), "; "))
		return
	}
	if len(adjs) == 0 {
		s.refused(Microsoft, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4836, "OfflineConversionsNullOrEmpty", "The offline conversion adjustments array is null or empty.")
		return
	}
	now := s.now()
	account := r.Header.Get("CustomerAccountId")
	partial := []any{}
	fail := func(i int, code, field, msg string) {
		partial = append(partial, map[string]any{"Index": i, "Code": 4800, "ErrorCode": code, "FieldPath": field, "Message": msg, "Type": "BatchError"})
	}
	s.mu.Lock()
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
		kc := s.counts[Microsoft].Keys[key]
		st := s.adjLocked(Microsoft, key)
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
			s.recordAdjustmentLocked(Microsoft, typ, key+"/Retract", !st.retracted)
			st.retracted = true
			continue
		case !st.restatedAt.IsZero() && !adjAt.After(st.restatedAt): // Restate: only a newer time counts
			s.recordAdjustmentLocked(Microsoft, typ, key+"/Restate@"+adjAt.UTC().Format(time.RFC3339), false)
			continue
		case st.retracted:
			fail(i, "ConversionAlreadyRetracted", "AdjustmentType", "The conversion was retracted (sandbox: the unattributed reason's name).")
		default:
			s.recordAdjustmentLocked(Microsoft, typ, key+"/Restate@"+adjAt.UTC().Format(time.RFC3339), true)
			st.restatedAt = adjAt
			continue
		}
		s.counts[Microsoft].Rejected++
	}
	s.counts[Microsoft].Requests++
	s.mu.Unlock()
	s.log.Debug("sandbox: microsoft offline conversion adjustments", zap.String("account", account), zap.Int("adjustments", len(adjs)), zap.Int("errors", len(partial)))
	if fl == faultTimeout {
		hold(r.Context(), f.timeoutDelay())
	}
	writeJSON(w, http.StatusOK, map[string]any{"PartialErrors": partial})
}
