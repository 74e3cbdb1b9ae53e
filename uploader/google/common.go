package google

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// MinClickAge is how old a click must be before Google accepts a conversion for it
// (TOO_RECENT_EVENT, "retry after 6 hours").
const MinClickAge = 6 * time.Hour

var numericID = regexp.MustCompile(`^[0-9]+$`)

// clickPrecedence is the order in which a Google click ID is chosen: gclid first, and never
// both braids.
var clickPrecedence = []string{"gclid", "gbraid", "wbraid"}

// pickClick returns the Google click to send: the row's gclid if it has one, else its
// gbraid, else its wbraid. The rows' clicks are already the latest of each type before the
// conversion (chosen upstream).
func pickClick(clicks []store.Click) (store.Click, bool) {
	for _, typ := range clickPrecedence {
		for _, c := range clicks {
			if c.Type == typ && c.ID != "" {
				return c, true
			}
		}
	}
	return store.Click{}, false
}

// checkRestatement applies the rules shared by both Google surfaces to a restatement: a
// finite, non-negative value and a currency code (Check of each surface adds the rest).
func checkRestatement(c *store.Conversion) *uploader.Error {
	if c.Value == nil {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_value", Detail: "a restatement must carry the new value"}
	}
	return uploader.CheckRow(c, uploader.RowRules{API: "Google", Restates: true, NonNegativeValue: true})
}

// checkConversion applies the rules shared by both Google surfaces to a conversion row.
func checkConversion(c *store.Conversion, now time.Time, window time.Duration) *uploader.Error {
	// Retractions are decided by each surface before this (Ads retracts, Data Manager cannot).
	if e := uploader.CheckRow(c, uploader.RowRules{API: "Google", Retracts: true, NonNegativeValue: true}); e != nil {
		return e
	}
	if !numericID.MatchString(c.ConversionName) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "invalid_conversion_action",
			Detail: fmt.Sprintf("conversion name must be the numeric conversion action ID, got %q", c.ConversionName)}
	}
	click, hasClick := pickClick(c.Identity.Clicks)
	if !Usable(c.Identity) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "no_identifier",
			Detail: "needs a gclid, gbraid or wbraid, or a hashed email or phone"}
	}
	if hasClick && !click.At.IsZero() {
		age := c.OccurredAt.Sub(click.At)
		switch {
		case age < 0:
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "conversion_precedes_click",
				Detail: fmt.Sprintf("conversion at %s is before the %s click at %s", c.OccurredAt.UTC().Format(time.RFC3339), click.Type, click.At.UTC().Format(time.RFC3339))}
		case age > window:
			return &uploader.Error{Class: uploader.ClassExpired, Reason: "click_window_exceeded",
				Detail: fmt.Sprintf("%s click is %s before the conversion; the window is %s", click.Type, age.Round(time.Hour), window)}
		}
		if since := now.Sub(click.At); since < MinClickAge {
			return &uploader.Error{Class: uploader.ClassTransient, Reason: "click_too_recent",
				Detail: fmt.Sprintf("%s click is under 6h old", click.Type), RetryAfter: MinClickAge - since}
		}
	}
	return nil
}

// googleError is the JSON error body of Google REST APIs: a google.rpc.Status.
type googleError struct {
	Error rpcStatus `json:"error"`
}

type rpcStatus struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Status  string            `json:"status"`
	Details []json.RawMessage `json:"details"`
}

// statusDetail is the union of the google.rpc detail types we read.
type statusDetail struct {
	Type            string            `json:"@type"`
	Reason          string            `json:"reason"`          // google.rpc.ErrorInfo
	Metadata        map[string]string `json:"metadata"`        // google.rpc.ErrorInfo
	RetryDelay      string            `json:"retryDelay"`      // google.rpc.RetryInfo
	FieldViolations []fieldViolation  `json:"fieldViolations"` // google.rpc.BadRequest
	Errors          []adsError        `json:"errors"`          // GoogleAdsFailure
	RequestID       string            `json:"requestId"`       // GoogleAdsFailure
}

type fieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
	Reason      string `json:"reason"`
}

// adsError is one GoogleAdsError.
type adsError struct {
	ErrorCode map[string]json.RawMessage `json:"errorCode"`
	Message   string                     `json:"message"`
	Location  struct {
		FieldPathElements []struct {
			FieldName string      `json:"fieldName"`
			Index     json.Number `json:"index"`
		} `json:"fieldPathElements"`
	} `json:"location"`
}

// code returns the error type and enum name, e.g. ("conversionUploadError", "EXPIRED_EVENT").
func (e adsError) code() (typ, enum string) {
	for k, raw := range e.ErrorCode {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return k, s
		}
		return k, strings.Trim(string(raw), `"`)
	}
	return "", ""
}

// index returns the row index the error points at (conversions[N] / conversionAdjustments[N]).
func (e adsError) index() (int, bool) {
	for _, el := range e.Location.FieldPathElements {
		switch el.FieldName {
		case "conversions", "conversion_adjustments", "conversionAdjustments":
			if el.Index == "" {
				return 0, false
			}
			i, err := strconv.Atoi(el.Index.String())
			return i, err == nil
		}
	}
	return 0, false
}

// parsed is a decoded Google error body; zero when the body is not one.
type parsed struct {
	status     rpcStatus
	reason     string // first ErrorInfo reason, or the status name
	retryDelay time.Duration
	violations []fieldViolation
	adsErrors  []adsError
}

func parseGoogleError(body []byte) parsed {
	var ge googleError
	_ = json.Unmarshal(body, &ge)
	p := parsed{status: ge.Error, reason: ge.Error.Status}
	for _, raw := range ge.Error.Details {
		var d statusDetail
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		switch {
		case strings.HasSuffix(d.Type, "google.rpc.ErrorInfo"):
			if d.Reason != "" && p.reason == ge.Error.Status {
				p.reason = d.Reason
			}
		case strings.HasSuffix(d.Type, "google.rpc.RetryInfo"):
			if dur, err := time.ParseDuration(d.RetryDelay); err == nil {
				p.retryDelay = dur
			}
		case strings.HasSuffix(d.Type, "google.rpc.BadRequest"):
			p.violations = append(p.violations, d.FieldViolations...)
		case strings.Contains(d.Type, "GoogleAdsFailure"):
			p.adsErrors = append(p.adsErrors, d.Errors...)
		}
	}
	if p.reason == "" {
		p.reason = "HTTP_" + strconv.Itoa(ge.Error.Code)
	}
	return p
}

// detail is a short human description of a Google error (never request data beyond
// field paths; Google's messages do not echo identifiers).
func (p parsed) detail() string {
	parts := []string{}
	if p.status.Message != "" {
		parts = append(parts, p.status.Message)
	}
	for i, v := range p.violations {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("(+%d more)", len(p.violations)-3))
			break
		}
		parts = append(parts, v.Field+": "+v.Description)
	}
	return uploader.Truncate(strings.Join(parts, "; "), 500)
}

// retryAfter reads a Retry-After header in seconds or HTTP-date form.
func retryAfter(h http.Header, now time.Time) time.Duration {
	d, _ := uploader.RetryAfter(h, now)
	return d
}

// classifyHTTP turns a non-2xx Google response into the dispatcher's error types. 401 must
// be handled by the caller first (token invalidation). A 400 is a batch rejection unless
// its reason names the request's setup (destination, permission).
func classifyHTTP(resp *http.Response, p parsed, setupReasons map[string]bool) error {
	ra := retryAfter(resp.Header, time.Now())
	if ra == 0 {
		ra = p.retryDelay
	}
	// A setup error is a setup error whatever status carries it (some front ends answer
	// auth failures with a 5xx).
	if p.status.Status == "PERMISSION_DENIED" || p.status.Status == "UNAUTHENTICATED" || setupReasons[p.reason] {
		return &uploader.Error{Class: uploader.ClassSetup, Reason: p.reason, Detail: p.detail()}
	}
	if p.status.Code == 0 && resp.StatusCode/100 == 4 {
		// Not a Google error body at all (a proxy's page): nothing here names a bad row.
		return &uploader.Error{Class: uploader.ClassUnknown, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: "answered without a Google error body"}
	}
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		return &uploader.Error{Class: uploader.ClassTransient, Reason: p.reason, Detail: p.detail(), RetryAfter: ra}
	case code >= 500 || code == http.StatusRequestTimeout:
		return &uploader.Error{Class: uploader.ClassTransient, Reason: p.reason, Detail: p.detail(), RetryAfter: ra}
	case code == http.StatusForbidden || code == http.StatusNotFound:
		return &uploader.Error{Class: uploader.ClassSetup, Reason: p.reason, Detail: p.detail()}
	case code == http.StatusBadRequest:
		if setupReasons[p.reason] {
			return &uploader.Error{Class: uploader.ClassSetup, Reason: p.reason, Detail: p.detail()}
		}
		return &uploader.Error{Class: uploader.ClassBatchRejected, Reason: p.reason, Detail: p.detail()}
	default:
		return &uploader.Error{Class: uploader.ClassUnknown, Reason: p.reason, Detail: fmt.Sprintf("unexpected HTTP %d: %s", code, p.detail())}
	}
}

// unauthorized handles a 401: drop the token; if it was just refreshed the credentials are
// bad (setup), else the token expired and the request can be retried at once.
func unauthorized(t *tokens, p parsed) error {
	if t.Invalidate() {
		return &uploader.Error{Class: uploader.ClassSetup, Reason: "UNAUTHENTICATED", Detail: "a freshly refreshed access token was refused: " + p.detail()}
	}
	return &uploader.Error{Class: uploader.ClassTransient, Reason: "token_expired", Detail: "access token refused; refreshing", Refreshed: true}
}

// allRows returns one result per row with the same outcome.
