package microsoft

import (
	"net/http"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// Sandbox mounts the Microsoft Advertising offline conversions emulation on a
// sandbox.Server (Spec().Sandbox):
//
//	POST /CampaignManagement/v13/OfflineConversions/Apply   ApplyOfflineConversions (PartialErrors per row)
//	POST /CampaignManagement/v13/OfflineConversionAdjustments/Apply   Restate and Retract (adjustments_sandbox.go)
//	POST /common/oauth2/v2.0/token                           the Server's token endpoint
//
// It takes access tokens the token endpoint issued plus a DeveloperToken (only the
// DeveloperToken of Options.Platforms["microsoft"] when set) and numeric account headers;
// when its Conversions are set only those goals exist; Faults.TooRecentGoals answer
// OfflineConversionGoalTooRecent. A click converts once per goal and time.
func Sandbox(s *sandbox.Server) sandbox.Emulator {
	return &emulator{Server: s, facts: schema.MustLoad(schema.Microsoft), own: s.Options().Platform(Name)}
}

type emulator struct {
	*sandbox.Server
	facts *schema.Schema
	own   sandbox.PlatformOptions
	adj   map[string]*adjState // conversion key → its adjustments; under the Server's lock
}

func (s *emulator) Platform() string { return Name }

func (s *emulator) ResetLocked() { s.adj = map[string]*adjState{} }

func (s *emulator) Route(r *http.Request) http.HandlerFunc {
	switch r.URL.Path {
	case "/CampaignManagement/v13/OfflineConversions/Apply":
		return s.handleMicrosoft
	case "/CampaignManagement/v13/OfflineConversionAdjustments/Apply":
		return s.handleAdjustments
	case "/common/oauth2/v2.0/token": // the Microsoft identity platform's path
		return s.HandleToken
	}
	return nil
}

var (
	obj    = sandbox.Obj
	arr    = sandbox.Arr
	str    = sandbox.Str
	digits = regexp.MustCompile(`^[0-9]+$`)
)

// msMaxAge is how old ConversionTime may be.
const msMaxAge = 90 * 24 * time.Hour

// msFault writes a Campaign Management fault: AdApiFaultDetail (Errors) for auth and
// service problems, ApiFaultDetail (OperationErrors) for the operation's.
func (s *emulator) msFault(w http.ResponseWriter, status int, typ string, code int, errorCode, msg string) {
	s.Lock()
	track := s.NextIDLocked("sandbox-ms-tracking")
	s.Unlock()
	e := []any{map[string]any{"Code": code, "ErrorCode": errorCode, "Message": msg, "Details": nil}}
	body := map[string]any{"TrackingId": track, "Type": typ}
	if typ == "ApiFaultDetail" {
		body["OperationErrors"], body["BatchErrors"] = e, []any{}
	} else {
		body["Errors"] = e
	}
	sandbox.WriteJSON(w, status, body)
}

// msAuth checks the bearer token (from /token) and the account headers; it writes the
// fault and returns false on failure.
func (s *emulator) msAuth(w http.ResponseWriter, r *http.Request, f sandbox.Faults) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.Lock()
	exp, known := s.TokenLocked(tok)
	expired := known && (!s.Now().Before(exp) || f.ExpiredToken)
	if !ok || !known || expired || r.Header.Get("DeveloperToken") == "" {
		s.CountsLocked(Name).Refused++
	}
	s.Unlock()
	switch {
	case expired:
		s.msFault(w, http.StatusUnauthorized, "AdApiFaultDetail", 109, "AuthenticationTokenExpired", "The OAuth access token has expired.")
		return false
	case !ok || !known || r.Header.Get("DeveloperToken") == "" ||
		(s.own.DeveloperToken != "" && r.Header.Get("DeveloperToken") != s.own.DeveloperToken):
		s.msFault(w, http.StatusUnauthorized, "AdApiFaultDetail", 105, "InvalidCredentials", "Authentication failed. Either supplied credentials are invalid or the account is inactive.")
		return false
	case !digits.MatchString(r.Header.Get("CustomerId")) || !digits.MatchString(r.Header.Get("CustomerAccountId")):
		s.Refused(Name, 0)
		s.msFault(w, http.StatusBadRequest, "AdApiFaultDetail", 106, "UserIsNotAuthorized", "The user does not represent a authorized developer or the CustomerId/CustomerAccountId header is not valid.")
		return false
	}
	return true
}

func (s *emulator) handleMicrosoft(w http.ResponseWriter, r *http.Request) {
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
	convs := arr(obj(body)["OfflineConversions"])
	if vs := s.facts.Validate("ApplyOfflineConversionsRequest", body); len(vs) > 0 {
		if len(convs) > 1000 {
			s.Refused(Name, len(convs))
			s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4837, "OfflineConversionBatchSizeExceedsLimit", "The number of offline conversions exceeds the allowed batch size limit.")
			return
		}
		s.Refused(Name, len(convs))
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 1000, "InvalidRequest", strings.Join(sandbox.ViolationsText(vs, 3), "; "))
		return
	}
	if len(convs) == 0 {
		s.Refused(Name, 0)
		s.msFault(w, http.StatusBadRequest, "ApiFaultDetail", 4836, "OfflineConversionsNullOrEmpty", "The offline conversions array is null or empty.")
		return
	}
	now := s.Now()
	account := r.Header.Get("CustomerAccountId")
	var partial []any
	fail := func(i int, code, field, msg string) {
		partial = append(partial, map[string]any{"Index": i, "Code": 4800, "ErrorCode": code, "FieldPath": field, "Message": msg, "Type": "BatchError"})
	}
	s.Lock()
	for i, c := range convs {
		oc := obj(c)
		name, click := str(oc["ConversionName"]), str(oc["MicrosoftClickId"])
		at, _ := time.Parse(time.RFC3339Nano, str(oc["ConversionTime"]))
		switch {
		case contains(f.TooRecentGoals, name):
			fail(i, "OfflineConversionGoalTooRecent", "ConversionName", "The offline conversion goal was created less than two hours before the import.")
		case name == f.Marker() || f.RejectsKey(click):
			fail(i, "OfflineConversionMSClickIdInvalid", "MicrosoftClickId", "The MSClickId field is invalid (sandbox reject marker).")
		case len(s.own.Conversions) > 0 && !contains(s.own.Conversions, name):
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
			kc := s.CountsLocked(Name).Keys[key]
			s.RecordLocked(Name, key, kc == nil || kc.Effective == 0)
			continue
		}
		s.CountsLocked(Name).Rejected++
	}
	s.CountsLocked(Name).Requests++
	s.Unlock()
	s.Log().Debug("sandbox: microsoft offline conversions", zap.String("account", account), zap.Int("conversions", len(convs)), zap.Int("errors", len(partial)))
	if fl == sandbox.FaultTimeout {
		sandbox.Hold(r.Context(), f.TimeoutDelay())
	}
	if partial == nil {
		partial = []any{}
	}
	sandbox.WriteJSON(w, http.StatusOK, map[string]any{"PartialErrors": partial})
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
