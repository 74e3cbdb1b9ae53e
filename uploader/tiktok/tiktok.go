package tiktok

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Platform is the TikTok Events API for one CRM event set. Safe for concurrent use.
type Platform struct {
	cfg uploader.DestinationConfig
	set *Settings
	log *zap.Logger
}

var _ uploader.Platform = (*Platform)(nil)

// New returns the TikTok platform for one destination; cfg gets its defaults applied.
func New(cfg uploader.DestinationConfig, log *zap.Logger) *Platform {
	cfg = cfg.WithDefaults(Spec())
	set, _ := cfg.Settings.(*Settings)
	if set == nil {
		set = &Settings{}
	}
	return &Platform{cfg: cfg, set: set, log: log}
}

// MaxBatch is 1,000 events per request.
func (p *Platform) MaxBatch() int { return min(p.cfg.BatchSize, MaxBatch) }

// Check skips retractions and denied consent and needs one identifier (hashed email, phone
// or external id, or a ttclid). TikTok's CRM age limit is undocumented, so none is applied.
func (p *Platform) Check(c *store.Conversion, _ time.Time) *uploader.Error {
	if e := uploader.CheckRow(c, uploader.RowRules{API: "the Events API", NameField: "event"}); e != nil {
		return e
	}
	if !Usable(c.Identity) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "no_identifier", Detail: "needs a hashed email, phone or external id, or a ttclid"}
	}
	return nil
}

// Request body types (tiktok_events.json: EventTrackRequest).
type (
	trackRequest struct {
		EventSource   string      `json:"event_source"`
		EventSourceID string      `json:"event_source_id"`
		TestEventCode string      `json:"test_event_code,omitempty"`
		Data          []eventData `json:"data"`
	}
	eventData struct {
		Event      string      `json:"event"`
		EventTime  int64       `json:"event_time"`
		EventID    string      `json:"event_id"`
		User       userT       `json:"user"`
		Properties *properties `json:"properties,omitempty"`
		Lead       *lead       `json:"lead,omitempty"`
	}
	userT struct {
		Email      []string `json:"email,omitempty"`
		Phone      []string `json:"phone,omitempty"`
		ExternalID []string `json:"external_id,omitempty"`
		Ttclid     string   `json:"ttclid,omitempty"`
	}
	properties struct {
		Value    *float64 `json:"value,omitempty"`
		Currency string   `json:"currency,omitempty"`
		OrderID  string   `json:"order_id,omitempty"`
	}
	lead struct {
		LeadEventSource string `json:"lead_event_source,omitempty"`
	}
)

func one(h string) []string {
	if h == "" {
		return nil
	}
	return []string{h}
}

func user(c *store.Conversion) userT {
	ids := c.Identity.Identifiers
	u := userT{
		Email:      one(ids.Get(pii.KeyEmail)),
		Phone:      one(ids.Get(pii.KeyPhoneE164)),
		ExternalID: one(ids.Get(pii.KeyExternalID)),
	}
	for _, cl := range c.Identity.Clicks {
		if cl.Type == "ttclid" {
			u.Ttclid = cl.ID
		}
	}
	return u
}

// Body returns the exact JSON body BuildRequest sends; it holds no credentials.
func (p *Platform) Body(batch []store.Conversion) ([]byte, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return nil, fmt.Errorf("tiktok: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	req := trackRequest{EventSource: "crm", EventSourceID: p.set.EventSourceID, TestEventCode: p.set.TestEventCode,
		Data: make([]eventData, 0, len(batch))}
	for i := range batch {
		c := &batch[i]
		if c.Kind == store.KindRetraction {
			return nil, fmt.Errorf("tiktok: row %d is a retraction; Check skips those", i)
		}
		ev := eventData{Event: c.ConversionName, EventTime: c.OccurredAt.Unix(), EventID: c.Key, User: user(c)}
		props := properties{OrderID: c.ObjectID}
		if c.Value != nil {
			v := *c.Value
			props.Value, props.Currency = &v, c.Currency
		}
		if props != (properties{}) {
			ev.Properties = &props
		}
		les := p.set.LeadEventSource
		if les == "" {
			les = c.Source
		}
		if les != "" {
			ev.Lead = &lead{LeadEventSource: les}
		}
		req.Data = append(req.Data, ev)
	}
	return json.Marshal(req)
}

// BuildRequest builds `POST {base}/open_api/v1.3/event/track/` with the Access-Token header.
func (p *Platform) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	body, err := p.Body(batch)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(p.cfg.BaseURL, "/") + "/open_api/v1.3/event/track/"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Access-Token", p.set.AccessToken)
	return req, nil
}

type envelope struct {
	Code      *int            `json:"code"`
	Message   string          `json:"message"`
	RequestID string          `json:"request_id"`
	Data      json.RawMessage `json:"data"`
}

// ParseResponse reads the envelope's code (TikTok reports errors in HTTP 200 bodies) and
// falls back to the HTTP status when the body is not an envelope.
func (p *Platform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil || env.Code == nil {
		switch {
		case resp.StatusCode/100 == 2:
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "unparseable_response", Detail: "track answered 2xx without a code"}
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: http.StatusText(resp.StatusCode), RetryAfter: retryAfter(resp.Header)}
		case resp.StatusCode == http.StatusBadRequest:
			return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "HTTP_400", Detail: "bad request without a TikTok envelope"}
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: http.StatusText(resp.StatusCode)}
		default:
			return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: http.StatusText(resp.StatusCode)}
		}
	}
	code := *env.Code
	reason := strconv.Itoa(code)
	detail := uploader.Truncate(env.Message+" (request_id "+env.RequestID+")", 500)
	class, wait := ErrorClass(code, resp.StatusCode)
	if ra := retryAfter(resp.Header); ra > 0 {
		wait = ra
	}
	switch class {
	case uploader.ClassAccepted:
		r := uploader.RowResult{Class: uploader.ClassAccepted, Reason: "OK"}
		if code != 0 {
			r.Reason, r.Detail = reason, detail
		}
		return uploader.AllRows(len(batch), r), nil
	case uploader.ClassPermanent:
		// 40002 names an invalid event of the batch: bisect to find it.
		return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
	default:
		return nil, &uploader.Error{Class: class, Reason: reason, Detail: detail, RetryAfter: wait}
	}
}

// ErrorClass classifies a TikTok response code (platforms.md 3.5):
//
//	0 OK, 20001 partial success (per-event detail undocumented)  → accepted
//	40100 too many requests, 42900                               → transient, 1 min
//	50000, 50002 and other 5xxxx server errors                   → transient
//	40001 no permission, 40102 token expired, 40104 token empty,
//	40105 token invalid                                          → setup
//	40002 invalid parameter (names the bad event, e.g. "Batch.0...") → permanent (batch)
//	any other code: 5xx/429 transient, else unknown (kept, retried, never rejected).
func ErrorClass(code, httpStatus int) (uploader.Class, time.Duration) {
	switch {
	case code == 0 || code == 20001:
		return uploader.ClassAccepted, 0
	case code == 40100 || code == 42900:
		return uploader.ClassTransient, time.Minute
	case code >= 50000 && code < 60000:
		return uploader.ClassTransient, 0
	case code == 40002:
		return uploader.ClassPermanent, 0
	case code == 40001 || code == 40102 || code == 40104 || code == 40105:
		return uploader.ClassSetup, 0
	case httpStatus >= 500 || httpStatus == http.StatusTooManyRequests:
		return uploader.ClassTransient, 0
	}
	return uploader.ClassUnknown, 0
}

func retryAfter(h http.Header) time.Duration {
	d, _ := uploader.RetryAfter(h, time.Now())
	return d
}
