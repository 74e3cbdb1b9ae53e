package sandbox

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// msMaxAge is how old ConversionTime may be.
const msMaxAge = 90 * 24 * time.Hour

// msFault writes a Campaign Management fault: AdApiFaultDetail (Errors) for auth and
// service problems, ApiFaultDetail (OperationErrors) for the operation's.
func (s *Server) msFault(w http.ResponseWriter, status int, typ string, code int, errorCode, msg string) {
	s.mu.Lock()
	track := s.nextID("sandbox-ms-tracking")
	s.mu.Unlock()
	e := []any{map[string]any{"Code": code, "ErrorCode": errorCode, "Message": msg, "Details": nil}}
	body := map[string]any{"TrackingId": track, "Type": typ}
	if typ == "ApiFaultDetail" {
		body["OperationErrors"], body["BatchErrors"] = e, []any{}
	} else {
		body["Errors"] = e
	}
	writeJSON(w, status, body)
}

// msAuth checks the bearer token (from /token) and the account headers; it writes the
// fault and returns false on failure.
func (s *Server) msAuth(w http.ResponseWriter, r *http.Request, f Faults) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[tok]
	expired := known && (!s.now().Before(exp) || f.ExpiredToken)
	if !ok || !known || expired || r.Header.Get("DeveloperToken") == "" {
		s.counts[Microsoft].Refused++
	}
	s.mu.Unlock()
	switch {
	case expired:
		s.msFault(w, http.StatusUnauthorized, "AdApiFaultDetail", 109, "AuthenticationTokenExpired", "The OAuth access token has expired.")
		return false
	case !ok || !known || r.Header.Get("DeveloperToken") == "" ||
		(s.opts.MicrosoftDeveloperToken != "" && r.Header.Get("DeveloperToken") != s.opts.MicrosoftDeveloperToken):
		s.msFault(w, http.StatusUnauthorized, "AdApiFaultDetail", 105, "InvalidCredentials", "Authentication failed. Either supplied credentials are invalid or the account is inactive.")
		return false
	case !digits.MatchString(r.Header.Get("CustomerId")) || !digits.MatchString(r.Header.Get("CustomerAccountId")):
		s.refused(Microsoft, 0)
		s.msFault(w, http.StatusBadRequest, "AdApiFaultDetail", 106, "UserIsNotAuthorized", "The user does not represent a authorized developer or the CustomerId/CustomerAccountId header is not valid.")
		return false
	}
	return true
}

func (s *Server) handleMicrosoft(w http.ResponseWriter, r *http.Request) {
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
	convs := arr(obj(body)["OfflineConversions"])
	if vs := s.schemas[Microsoft].Validate("ApplyOfflineConversionsRequest", body); len(vs) > 0 {
		if len(convs) > 1000 {
			s.refused(Microsoft, len(convs))
			s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4837, "OfflineConversionBatchSizeExceedsLimit", "The number of offline conversions exceeds the allowed batch size limit.")
			return
		}
		s.refused(Microsoft, len(convs))
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", strings.Join(violationsText(vs, 3), "; "))
		return
	}
	if len(convs) == 0 {
		s.refused(Microsoft, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4836, "OfflineConversionsNullOrEmpty", "The offline conversions array is null or empty.")
		return
	}
	now := s.now()
	account := r.Header.Get("CustomerAccountId")
	var partial []any
	fail := func(i int, code, field, msg string) {
		partial = append(partial, map[string]any{"Index": i, "Code": 4800, "ErrorCode": code, "FieldPath": field, "Message": msg, "Type": "BatchError"})
	}
	s.mu.Lock()
	for i, c := range convs {
		oc := obj(c)
		name, click := str(oc["ConversionName"]), str(oc["MicrosoftClickId"])
		at, _ := time.Parse(time.RFC3339Nano, str(oc["ConversionTime"]))
		switch {
		case contains(f.TooRecentGoals, name):
			fail(i, "OfflineConversionGoalTooRecent", "ConversionName", "The offline conversion goal was created less than two hours before the import.")
		case name == f.marker() || f.rejectsKey(click):
			fail(i, "OfflineConversionMSClickIdInvalid", "MicrosoftClickId", "The MSClickId field is invalid (sandbox reject marker).")
		case len(s.opts.MicrosoftGoals) > 0 && !contains(s.opts.MicrosoftGoals, name):
			fail(i, "OfflineConversionNameInvalid", "ConversionName", "The provided offline conversion name does not match any existing goal.")
		case at.After(now):
			fail(i, "FutureConversionTimeCannotBeSet", "ConversionTime", "The conversion time is set to a future date.")
		case now.Sub(at) > msMaxAge:
			fail(i, "OfflineConversionTimeOutOfWindow", "ConversionTime", "The conversion time is outside the allowed lookback window.")
		case click == "" && str(oc["HashedEmailAddress"]) == "" && str(oc["HashedPhoneNumber"]) == "":
			fail(i, "OfflineConversionMSClickIdNullOrEmpty", "MicrosoftClickId", "The MSClickId field is null or empty.")
		default:
			// "Duplicate offline conversions with the same MicrosoftClickId and ConversionTime
			// will be ignored"; a click may convert once per goal and time. Without a click the
			// hashes stand in for it.
			id := click
			if id == "" {
				id = "hashed:" + str(oc["HashedEmailAddress"]) + str(oc["HashedPhoneNumber"])
			}
			key := account + "/" + name + "/" + id + "/" + at.UTC().Format(time.RFC3339)
			kc := s.counts[Microsoft].Keys[key]
			s.recordLocked(Microsoft, key, kc == nil || kc.Effective == 0)
			continue
		}
		s.counts[Microsoft].Rejected++
	}
	s.counts[Microsoft].Requests++
	s.mu.Unlock()
	s.log.Debug("sandbox: microsoft offline conversions", zap.String("account", account), zap.Int("conversions", len(convs)), zap.Int("errors", len(partial)))
	if fl == faultTimeout {
		hold(r.Context(), f.timeoutDelay())
	}
	if partial == nil {
		partial = []any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"PartialErrors": partial})
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
