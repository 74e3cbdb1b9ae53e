package linkedin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// ConversionURN prefixes a conversion rule id.
const ConversionURN = "urn:lla:llaPartnerConversion:"

// Platform is the LinkedIn Conversions API for one app's token. Safe for concurrent use.
type Platform struct {
	cfg    uploader.DestinationConfig
	set    *Settings
	tokens *tokens
	log    *zap.Logger
}

var _ uploader.Platform = (*Platform)(nil)

// New returns the LinkedIn platform for one destination; cfg gets its defaults applied.
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
	return &Platform{cfg: cfg, set: set, tokens: newTokens(set, client, log), log: log}
}

// MaxBatch is 5,000 elements per BATCH_CREATE.
func (p *Platform) MaxBatch() int { return min(p.cfg.BatchSize, MaxBatch) }

// Check skips retractions (LinkedIn has none) and denied consent; expires an event more
// than 90 days (less AgeMargin) before now; lets an event in the future wait; needs a
// li_fat_id or a hashed email.
func (p *Platform) Check(c *store.Conversion, now time.Time) *uploader.Error {
	if e := uploader.CheckRow(c, uploader.RowRules{API: Spec().API, NameField: "conversion", NonNegativeValue: true}); e != nil {
		return e
	}
	if age := now.Sub(c.OccurredAt); age > MaxAge-AgeMargin {
		return &uploader.Error{Class: uploader.ClassExpired, Reason: "event_too_old",
			Detail: fmt.Sprintf("event is %s old; LinkedIn takes events of the last 90 days", age.Round(time.Minute))}
	}
	if ahead := c.OccurredAt.Sub(now); ahead > FutureSkew {
		return &uploader.Error{Class: uploader.ClassTransient, Reason: "event_time_in_future", RetryAfter: ahead,
			Detail: fmt.Sprintf("conversionHappenedAt is %s ahead of now; the row waits", ahead.Round(time.Second))}
	}
	if !Usable(c.Identity) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "no_identifier", Detail: "needs a li_fat_id or a hashed email"}
	}
	return nil
}

// Request body types (linkedin_conversions.json: BatchCreateConversionEventsRequest).
type (
	batchRequest struct {
		Elements []event `json:"elements"`
	}
	event struct {
		Conversion           string `json:"conversion"`
		ConversionHappenedAt int64  `json:"conversionHappenedAt"`
		ConversionValue      *money `json:"conversionValue,omitempty"`
		EventID              string `json:"eventId"`
		User                 user   `json:"user"`
	}
	money struct {
		CurrencyCode string `json:"currencyCode"`
		Amount       string `json:"amount"`
	}
	user struct {
		UserIDs []userID `json:"userIds"`
	}
	userID struct {
		IDType  string `json:"idType"`
		IDValue string `json:"idValue"`
	}
)

// Body returns the exact JSON body BuildRequest sends; it holds no credentials.
func (p *Platform) Body(batch []store.Conversion) ([]byte, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return nil, fmt.Errorf("linkedin: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	req := batchRequest{Elements: make([]event, 0, len(batch))}
	for i := range batch {
		c := &batch[i]
		if c.Kind == store.KindRetraction {
			return nil, fmt.Errorf("linkedin: row %d is a retraction; Check skips those", i)
		}
		ev := event{
			Conversion:           ConversionURN + c.ConversionName,
			ConversionHappenedAt: c.OccurredAt.UnixMilli(),
			EventID:              c.Key,
			User:                 user{UserIDs: []userID{}},
		}
		if h := c.Identity.Identifiers.Get(pii.KeyEmail); h != "" {
			ev.User.UserIDs = append(ev.User.UserIDs, userID{IDType: "SHA256_EMAIL", IDValue: h})
		}
		if id := liFatID(c.Identity); id != "" {
			ev.User.UserIDs = append(ev.User.UserIDs, userID{IDType: "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", IDValue: id})
		}
		if c.Value != nil {
			ev.ConversionValue = &money{CurrencyCode: c.Currency, Amount: strconv.FormatFloat(*c.Value, 'f', -1, 64)}
		}
		req.Elements = append(req.Elements, ev)
	}
	return json.Marshal(req)
}

// BuildRequest builds `POST {base}/rest/conversionEvents` as a BATCH_CREATE with the
// configured LinkedIn-Version.
func (p *Platform) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	body, err := p.Body(batch)
	if err != nil {
		return nil, err
	}
	tok, err := p.tokens.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(p.cfg.BaseURL, "/") + "/rest/conversionEvents"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("LinkedIn-Version", p.cfg.APIVersion)
	req.Header.Set("X-Restli-Protocol-Version", "2.0.0")
	req.Header.Set("X-RestLi-Method", "BATCH_CREATE")
	return req, nil
}

// errorBody is LinkedIn's error shape (top level, and per element in a batch answer).
type errorBody struct {
	Status           int    `json:"status"`
	ServiceErrorCode int    `json:"serviceErrorCode"`
	Code             string `json:"code"`
	Message          string `json:"message"`
}

type batchAnswer struct {
	Elements []struct {
		Status int        `json:"status"`
		Error  *errorBody `json:"error"`
	} `json:"elements"`
}

// indexError is one line of a 422's message: "Index: 0, ERROR :: /path :: problem".
var indexError = regexp.MustCompile(`Index: (\d+), ERROR :: ([^\n]*)`)

// setupCodes are error codes that no retry or row split fixes, whatever the HTTP status.
var setupCodes = map[string]bool{
	"REVOKED_ACCESS_TOKEN": true, "ACCESS_DENIED": true, "VERSION_MISSING": true, "NONEXISTENT_VERSION": true,
}

// ParseResponse classifies a BATCH_CREATE answer, reading the body before the status:
//
//   - 2xx with elements: one outcome per element by its status (ElementClass).
//   - 426 / NONEXISTENT_VERSION: setup, naming the version to set.
//   - REVOKED_ACCESS_TOKEN, ACCESS_DENIED, VERSION_MISSING (in any status, 5xx included),
//     403: setup.
//   - 401: with a refresh token, the cached token is dropped and the request resent once
//     with a fresh one (transient, Refreshed); a fresh or fixed token refused is setup.
//   - 422 listing "Index: N, ERROR :: ..." lines: those rows are rejected (documented
//     validation errors), the others were not created with them and are retried.
//     A 422 or 400 in LinkedIn's error shape naming no index: the dispatcher bisects; one
//     without that shape is unknown.
//   - 429, 5xx: transient (Retry-After honoured). Anything else: unknown.
func (p *Platform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	var e errorBody
	shaped := json.Unmarshal(body, &e) == nil && (e.Status != 0 || e.Message != "" || e.Code != "")
	ra := retryAfter(resp.Header)
	status := resp.StatusCode
	reason := e.Code
	if reason == "" {
		reason = "HTTP_" + strconv.Itoa(status)
	}
	detail := uploader.Truncate(e.Message, 500)
	if status/100 == 2 {
		return p.elements(body, batch)
	}
	switch {
	case status == http.StatusUpgradeRequired || e.Code == "NONEXISTENT_VERSION":
		return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: "NONEXISTENT_VERSION",
			Detail: fmt.Sprintf("LinkedIn-Version %s is not active (%s); set api_version: %s", p.cfg.APIVersion, detail, Spec().Versions[0].Name)}
	case setupCodes[e.Code] || status == http.StatusForbidden:
		return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: reason, Detail: detail}
	case status == http.StatusUnauthorized:
		if p.tokens.Invalidate() {
			return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: reason, Detail: "LinkedIn refused the access token (a fresh or the configured one): " + detail}
		}
		return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "token_expired", Detail: "access token refused; refreshing", Refreshed: true}
	case (status == http.StatusUnprocessableEntity || status == http.StatusBadRequest) && !shaped:
		return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: reason, Detail: fmt.Sprintf("HTTP %d without a LinkedIn error body", status)}
	case status == http.StatusUnprocessableEntity:
		if rows := indexed(e.Message, len(batch)); rows != nil {
			return rows, nil
		}
		return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
	case status == http.StatusBadRequest:
		return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: reason, Detail: detail, RetryAfter: ra}
	}
	return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: reason, Detail: fmt.Sprintf("unexpected HTTP %d: %s", status, detail)}
}

// indexed turns a 422 message into per-row results, or nil when it names no valid index.
func indexed(msg string, n int) []uploader.RowResult {
	out := uploader.AllRows(n, uploader.RowResult{Class: uploader.ClassTransient, Reason: "batch_failed_with_others",
		Detail: "LinkedIn refused the batch for other rows; sent again without them"})
	named := false
	for _, m := range indexError.FindAllStringSubmatch(msg, -1) {
		i, err := strconv.Atoi(m[1])
		if err != nil || i < 0 || i >= n {
			return nil
		}
		if out[i].Class != uploader.ClassPermanent {
			out[i] = uploader.RowResult{Class: uploader.ClassPermanent, Reason: "validation", Detail: uploader.Truncate(strings.TrimSpace(m[2]), 500)}
		}
		named = true
	}
	if !named {
		return nil
	}
	return out
}

// elements maps a batch answer's per-element statuses to rows.
func (p *Platform) elements(body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	var a batchAnswer
	if err := json.Unmarshal(body, &a); err != nil || len(a.Elements) != len(batch) {
		return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "unparseable_response",
			Detail: fmt.Sprintf("BATCH_CREATE answered 2xx without one status per element (%d rows)", len(batch))}
	}
	out := make([]uploader.RowResult, len(batch))
	for i, el := range a.Elements {
		r := uploader.RowResult{Class: ElementClass(el.Status), Reason: strconv.Itoa(el.Status)}
		if el.Error != nil {
			if el.Error.Code != "" {
				r.Reason = el.Error.Code
			}
			r.Detail = uploader.Truncate(el.Error.Message, 500)
			if setupCodes[el.Error.Code] {
				r.Class = uploader.ClassSetup
			}
		}
		out[i] = r
	}
	return out, nil
}

// ElementClass classifies one element's status of a BATCH_CREATE answer:
//
//	200, 201                 → accepted
//	400, 422 (the element's validation error) → permanent
//	401, 403                 → setup (the destination pauses; rows kept)
//	429, 5xx                 → transient
//	anything else            → unknown (kept, retried, never rejected)
func ElementClass(status int) uploader.Class {
	switch {
	case status == http.StatusOK || status == http.StatusCreated:
		return uploader.ClassAccepted
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity:
		return uploader.ClassPermanent
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return uploader.ClassSetup
	case status == http.StatusTooManyRequests || status >= 500:
		return uploader.ClassTransient
	}
	return uploader.ClassUnknown
}

func retryAfter(h http.Header) time.Duration {
	d, _ := uploader.RetryAfter(h, time.Now())
	return d
}
