package microsoft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Platform is Microsoft Advertising offline conversions for one ad account. Safe for
// concurrent use.
type Platform struct {
	cfg    uploader.DestinationConfig
	set    *Settings
	tokens *tokens
	log    *zap.Logger

	mu        sync.Mutex
	goalReady map[string]time.Time // goal name → when Microsoft takes its conversions (GoalTooRecent)
}

var _ uploader.Platform = (*Platform)(nil)

// New returns the Microsoft platform for one destination; cfg gets its defaults applied.
// client is used for the token endpoint (nil: a client with cfg.Timeout).
func New(cfg uploader.DestinationConfig, client *http.Client, log *zap.Logger) *Platform {
	cfg = cfg.WithDefaults(Spec())
	set, _ := cfg.Settings.(*Settings)
	if set == nil {
		set = &Settings{}
		set.Defaults()
	}
	if client == nil {
		client = &http.Client{Timeout: cfg.Timeout}
	}
	return &Platform{cfg: cfg, set: set, tokens: newTokens(set, client, log), log: log, goalReady: map[string]time.Time{}}
}

// MaxBatch is 1,000 offline conversions per call.
func (p *Platform) MaxBatch() int { return min(p.cfg.BatchSize, MaxBatch) }

// Check skips denied consent; expires a ConversionTime more than 90 days (less AgeMargin)
// before now; lets a ConversionTime in the future, and rows of a goal Microsoft called too
// recent, wait (never dropped); needs an msclkid or a hashed email or phone. Retractions
// and restatements are checked by checkAdjustment (adjustments.go).
func (p *Platform) Check(c *store.Conversion, now time.Time) *uploader.Error {
	if store.Adjustment(c.Kind) {
		return p.checkAdjustment(c, now)
	}
	if e := uploader.CheckRow(c, uploader.RowRules{API: Spec().API, NameField: "ConversionName", NonNegativeValue: true}); e != nil {
		return e
	}
	if age := now.Sub(c.OccurredAt); age > MaxAge-AgeMargin {
		return &uploader.Error{Class: uploader.ClassExpired, Reason: "conversion_too_old",
			Detail: fmt.Sprintf("ConversionTime is %s old; Microsoft takes conversions of the last 90 days", age.Round(time.Minute))}
	}
	if ahead := c.OccurredAt.Sub(now); ahead > FutureSkew {
		return &uploader.Error{Class: uploader.ClassTransient, Reason: "conversion_time_in_future", RetryAfter: ahead,
			Detail: fmt.Sprintf("ConversionTime is %s ahead of now; Microsoft refuses future times, so the row waits", ahead.Round(time.Second))}
	}
	if wait := p.goalWait(c.ConversionName, now); wait > 0 {
		return &uploader.Error{Class: uploader.ClassHeld, Reason: "OfflineConversionGoalTooRecent", RetryAfter: wait,
			Detail: fmt.Sprintf("Microsoft takes conversions for a goal 2 hours after it is created; waiting %s", wait.Round(time.Minute))}
	}
	if !Usable(c.Identity) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "no_identifier", Detail: "needs an msclkid, or a hashed email or phone (enhanced conversions)"}
	}
	return nil
}

// goalWait is how long rows of goal must still wait after Microsoft called it too recent.
func (p *Platform) goalWait(goal string, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.goalReady[goal]
	if !ok {
		return 0
	}
	if !now.Before(until) {
		delete(p.goalReady, goal)
		return 0
	}
	return until.Sub(now)
}

func (p *Platform) goalTooRecent(goal string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.goalReady[goal]; !ok {
		p.goalReady[goal] = now.Add(GoalWait)
	}
}

// Request body types (microsoft_offline_conversions.json: ApplyOfflineConversionsRequest).
type (
	applyRequest struct {
		OfflineConversions []offlineConversion `json:"OfflineConversions"`
	}
	offlineConversion struct {
		ConversionName         string   `json:"ConversionName"`
		ConversionTime         string   `json:"ConversionTime"`
		MicrosoftClickID       string   `json:"MicrosoftClickId,omitempty"`
		ConversionValue        *float64 `json:"ConversionValue,omitempty"`
		ConversionCurrencyCode string   `json:"ConversionCurrencyCode,omitempty"`
		HashedEmailAddress     string   `json:"HashedEmailAddress,omitempty"`
		HashedPhoneNumber      string   `json:"HashedPhoneNumber,omitempty"`
	}
)

// ConversionTime formats t as Microsoft's UTC dateTime. It is the CRM change time, to the
// second: Microsoft ignores a second conversion with the same MicrosoftClickId and
// ConversionTime, so a resend must carry exactly the same value.
func ConversionTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Body returns the exact JSON body BuildRequest sends; it holds no credentials. A batch of
// adjustments (see BatchGroup) is an ApplyOfflineConversionAdjustmentsRequest.
func (p *Platform) Body(batch []store.Conversion) ([]byte, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return nil, fmt.Errorf("microsoft: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	if store.Adjustment(batch[0].Kind) {
		return adjustmentsBody(batch)
	}
	req := applyRequest{OfflineConversions: make([]offlineConversion, 0, len(batch))}
	for i := range batch {
		c := &batch[i]
		if store.Adjustment(c.Kind) {
			return nil, fmt.Errorf("microsoft: batch mixes conversions and adjustments (row %d)", i)
		}
		oc := offlineConversion{
			ConversionName:     c.ConversionName,
			ConversionTime:     ConversionTime(c.OccurredAt),
			MicrosoftClickID:   clickID(c.Identity),
			HashedEmailAddress: c.Identity.Identifiers.Get(pii.KeyEmail),
			HashedPhoneNumber:  c.Identity.Identifiers.Get(pii.KeyPhoneE164),
		}
		if c.Value != nil {
			v := *c.Value
			oc.ConversionValue, oc.ConversionCurrencyCode = &v, c.Currency
		}
		req.OfflineConversions = append(req.OfflineConversions, oc)
	}
	return json.Marshal(req)
}

// BuildRequest builds `POST {base}/CampaignManagement/{version}/OfflineConversions/Apply`
// (or `OfflineConversionAdjustments/Apply` for a batch of adjustments) with a fresh or
// cached access token and the account headers.
func (p *Platform) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	body, err := p.Body(batch)
	if err != nil {
		return nil, err
	}
	tok, err := p.tokens.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	service := "OfflineConversions"
	if store.Adjustment(batch[0].Kind) {
		service = "OfflineConversionAdjustments"
	}
	u := fmt.Sprintf("%s/CampaignManagement/%s/%s/Apply", strings.TrimRight(p.cfg.BaseURL, "/"), p.cfg.APIVersion, service)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("DeveloperToken", p.set.DeveloperToken)
	req.Header.Set("CustomerId", p.set.CustomerID)
	req.Header.Set("CustomerAccountId", p.set.CustomerAccountID)
	return req, nil
}

// Response types: ApplyOfflineConversionsResponse and the ApplicationFault family
// (AdApiFaultDetail.Errors for auth and header problems, ApiFaultDetail.OperationErrors
// and BatchErrors for operation problems).
type (
	batchError struct {
		Index     int    `json:"Index"`
		Code      int    `json:"Code"`
		ErrorCode string `json:"ErrorCode"`
		Message   string `json:"Message"`
		FieldPath string `json:"FieldPath"`
	}
	apiError struct {
		Code      int    `json:"Code"`
		ErrorCode string `json:"ErrorCode"`
		Message   string `json:"Message"`
	}
	answer struct {
		PartialErrors   []batchError `json:"PartialErrors"`
		TrackingID      string       `json:"TrackingId"`
		Type            string       `json:"Type"`
		Errors          []apiError   `json:"Errors"`
		OperationErrors []apiError   `json:"OperationErrors"`
		BatchErrors     []batchError `json:"BatchErrors"`
	}
)

// ParseResponse classifies an Apply answer, reading the body before the status:
//
//   - 2xx with PartialErrors: the rows they name by Index get their ErrorCode's class
//     (RowClass), every other row is accepted.
//   - a fault (any status): a credential refusal (105, 109, or a bare 401) drops the cached
//     token and asks for one resend with a fresh one (transient, Refreshed), or is setup
//     when the token was fresh; 106 and other account codes are setup; 117 CallRateExceeded
//     and 0 InternalError are transient; a fault naming rows (BatchErrors) is classified
//     by its first code; codes this package does not know are unknown, never permanent.
//   - no fault body: 5xx and 429 transient, 401 as above, 403 setup, anything else unknown.
func (p *Platform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	var a answer
	parsed := json.Unmarshal(body, &a) == nil
	ra := retryAfter(resp.Header)
	if resp.StatusCode/100 == 2 && parsed && len(a.Errors) == 0 && len(a.OperationErrors) == 0 && len(a.BatchErrors) == 0 {
		return p.rows(a, batch)
	}
	errs := append(append([]apiError{}, a.Errors...), a.OperationErrors...)
	for _, b := range a.BatchErrors {
		errs = append(errs, apiError{Code: b.Code, ErrorCode: b.ErrorCode, Message: b.Message})
	}
	track := ""
	if a.TrackingID != "" {
		track = " (TrackingId " + a.TrackingID + ")"
	}
	for _, e := range errs {
		name := e.ErrorCode
		if name == "" {
			name = faultNames[e.Code]
		}
		class, ok := faultClasses[name]
		if !ok {
			continue
		}
		detail := uploader.Truncate(e.Message+track, 500)
		if class == classCredentials {
			return nil, p.refused(name, detail)
		}
		wait := time.Duration(0)
		if name == "CallRateExceeded" {
			wait = time.Minute // "resubmit ... after one minute" (handling service errors)
		}
		if ra > 0 {
			wait = ra
		}
		return nil, &uploader.Error{Class: class, Reason: name, Detail: detail, RetryAfter: wait}
	}
	if len(errs) > 0 {
		e := errs[0]
		reason := e.ErrorCode
		if reason == "" {
			reason = strconv.Itoa(e.Code)
		}
		detail := uploader.Truncate(e.Message+track, 500)
		class, wait := RowClass(e.ErrorCode)
		switch class {
		case uploader.ClassPermanent:
			// The operation failed for some row's documented error: bisect to find it.
			return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
		case uploader.ClassHeld:
			if len(batch) == 1 || sameGoal(batch) {
				return nil, &uploader.Error{Class: uploader.ClassHeld, Reason: reason, Detail: detail, RetryAfter: wait}
			}
			return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
		case uploader.ClassUnknown:
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: reason, Detail: detail, RetryAfter: ra}
			}
		}
		if ra > 0 {
			wait = ra
		}
		return nil, &uploader.Error{Class: class, Reason: reason, Detail: detail, RetryAfter: wait}
	}
	reason := "HTTP_" + strconv.Itoa(resp.StatusCode)
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		return nil, p.refused(reason, "access token refused")
	case code == http.StatusTooManyRequests || code >= 500:
		return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: reason, Detail: http.StatusText(code), RetryAfter: ra}
	case code == http.StatusForbidden:
		return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: reason, Detail: http.StatusText(code)}
	case code/100 == 2:
		return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "unparseable_response", Detail: "Apply answered 2xx without an ApplyOfflineConversionsResponse"}
	}
	return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: reason, Detail: "answered without a Microsoft fault body"}
}

// rows turns PartialErrors into one result per row.
func (p *Platform) rows(a answer, batch []store.Conversion) ([]uploader.RowResult, error) {
	out := uploader.AllRows(len(batch), uploader.RowResult{Class: uploader.ClassAccepted, Reason: "applied"})
	named := make([]bool, len(batch))
	now := time.Now()
	for _, e := range a.PartialErrors {
		if e.Index < 0 || e.Index >= len(batch) {
			return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "partial_error_index",
				Detail: fmt.Sprintf("PartialErrors names index %d of a %d-row request", e.Index, len(batch))}
		}
		if named[e.Index] {
			continue // the first error of a row decides it
		}
		named[e.Index] = true
		class, wait := RowClass(e.ErrorCode)
		reason := e.ErrorCode
		if reason == "" {
			reason = strconv.Itoa(e.Code)
		}
		if class == uploader.ClassBatchRejected {
			// Too many rows for the call: the dispatcher bisects to a size Microsoft takes.
			return nil, &uploader.Error{Class: class, Reason: reason, Detail: uploader.Truncate(e.Message, 500)}
		}
		detail := e.Message
		if e.FieldPath != "" {
			detail = e.FieldPath + ": " + detail
		}
		if e.ErrorCode == "OfflineConversionGoalTooRecent" {
			p.goalTooRecent(batch[e.Index].ConversionName, now)
		}
		out[e.Index] = uploader.RowResult{Class: class, Reason: reason, Detail: uploader.Truncate(detail, 500), RetryAfter: wait}
	}
	return out, nil
}

// refused handles a credential refusal: drop the token; if it was just refreshed the
// credentials (or the developer token) are bad, else the token expired and the request can
// be resent at once.
func (p *Platform) refused(reason, detail string) error {
	if p.tokens.Invalidate() {
		return &uploader.Error{Class: uploader.ClassSetup, Reason: reason, Detail: "a freshly refreshed access token (or the developer token) was refused: " + detail}
	}
	return &uploader.Error{Class: uploader.ClassTransient, Reason: "token_expired", Detail: "access token refused; refreshing", Refreshed: true}
}

func sameGoal(batch []store.Conversion) bool {
	for i := range batch {
		if batch[i].ConversionName != batch[0].ConversionName {
			return false
		}
	}
	return true
}

// classCredentials marks the fault codes that mean the access token was refused.
const classCredentials uploader.Class = "credentials"

// faultClasses are the request-level errors of the Bing Ads operation error codes this
// package knows ("Handling Service Errors and Exceptions", v13), by ErrorCode; faultNames
// maps their numeric Code for a fault that gives only the number. The REST surface's HTTP
// status for each is UNCONFIRMED, so the code decides, not the status.
var faultClasses = map[string]uploader.Class{
	"InternalError":              uploader.ClassTransient,
	"InvalidCredentials":         classCredentials, // access token or developer token
	"AuthenticationTokenExpired": classCredentials,
	"UserIsNotAuthorized":        uploader.ClassSetup, // no access to the account
	"CallRateExceeded":           uploader.ClassTransient,
}

var faultNames = map[int]string{0: "InternalError", 105: "InvalidCredentials", 106: "UserIsNotAuthorized", 109: "AuthenticationTokenExpired", 117: "CallRateExceeded"}

// RowClass classifies a BatchError ErrorCode of an offline conversion. The names are the
// documented offline conversion statuses (DailySummary.Status, Campaign Management v13) plus
// OfflineConversionMicrosoftClickIdInvalid seen in peers; their numeric codes are
// UNCONFIRMED, so only the names are matched.
//
//	OfflineConversionGoalTooRecent                        → held, 2 h (the goal wait)
//	OfflineConversionNameInvalid, NotEligibleForEnhancedConversions,
//	GoalNotEligibleForExternalAttribution,
//	OfflineConversionRestateRetractNotSupported           → held (the goal's setup)
//	OfflineConversionTimeOutOfWindow (+ adjustment)       → expired
//	FutureConversionTimeCannotBeSet (+ adjustment)        → transient, 15 min
//	OfflineConversionBatchSizeExceedsLimit                → batch_rejected (bisect to a smaller size)
//	the other documented validation statuses              → permanent
//	anything else                                         → unknown (kept, retried, never rejected)
func RowClass(code string) (uploader.Class, time.Duration) {
	switch code {
	case "OfflineConversionGoalTooRecent":
		return uploader.ClassHeld, GoalWait
	case "OfflineConversionNameInvalid", "NotEligibleForEnhancedConversions", "GoalNotEligibleForExternalAttribution",
		"OfflineConversionRestateRetractNotSupported":
		return uploader.ClassHeld, 0
	case "OfflineConversionTimeOutOfWindow", "OfflineConversionAdjustmentTimeOutOfWindow":
		return uploader.ClassExpired, 0
	case "FutureConversionTimeCannotBeSet", "OfflineConversionFutureAdjustmentTimeCannotBeSet":
		return uploader.ClassTransient, 15 * time.Minute
	case "OfflineConversionBatchSizeExceedsLimit":
		return uploader.ClassBatchRejected, 0
	case "OfflineConversionIsNull", "OfflineConversionMSClickIdNullOrEmpty", "OfflineConversionMSClickIdInvalid",
		"OfflineConversionMicrosoftClickIdInvalid", "OfflineConversionNameNullOrEmpty", "OfflineConversionValueInvalid",
		"OfflineConversionCurrencyCodeInvalid", "OfflineConversionTimeNullOrEmpty", "OfflineConversionTimeInvalid",
		"ConversionTimeEarlierThanClickTime", "ClickIdDateTimeOutsideGoalConversionWindow",
		"ConversionEmailAddressIsNotHashed", "ConversionPhoneNumberIsNotHashed",
		"ExternalAttributionRequiredFieldEmpty", "ExternalAttributionModelTooLong", "ExternalAttributionCreditValueInvalid",
		"OfflineConversionInvalidAdjustmentType", "OfflineConversionAdjustmentTimeNullOrEmpty",
		"OfflineConversionAdjustmentTimeInvalid", "OfflineConversionAdjustmentTimeEarlierThanConversionTime",
		"OfflineConversionAdjustmentValueNotExpected", "OfflineConversionAdjustmentValueRequired":
		return uploader.ClassPermanent, 0
	}
	return uploader.ClassUnknown, 0
}

func retryAfter(h http.Header) time.Duration {
	d, _ := uploader.RetryAfter(h, time.Now())
	return d
}
