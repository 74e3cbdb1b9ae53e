package meta

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

// MaxEventAge is how old event_time may be when Meta receives it.
const MaxEventAge = 7 * 24 * time.Hour

// AgeMargin is kept off MaxEventAge so a row checked now is still inside the window when the
// request arrives (after queueing and retries within one attempt).
const AgeMargin = 10 * time.Minute

var leadID = regexp.MustCompile(`^[0-9]{15,17}$`)

// Platform is the Meta Conversions API for one dataset. Safe for concurrent use.
type Platform struct {
	cfg uploader.DestinationConfig
	set *Settings
	log *zap.Logger
}

var _ uploader.Platform = (*Platform)(nil)

// New returns the Meta platform for one destination; cfg gets its defaults applied.
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

// Check skips retractions (Meta has none) and rows whose ad_user_data consent is denied,
// expires events more than 7 days (less AgeMargin) before now ("event_too_old"), and needs
// at least one identifier.
func (p *Platform) Check(c *store.Conversion, now time.Time) *uploader.Error {
	if e := uploader.CheckRow(c, uploader.RowRules{API: "the Conversions API", NameField: "event_name"}); e != nil {
		return e
	}
	if age := now.Sub(c.OccurredAt); age > MaxEventAge-AgeMargin {
		return &uploader.Error{Class: uploader.ClassExpired, Reason: "event_too_old",
			Detail: fmt.Sprintf("event is %s old; Meta takes events up to 7 days old", age.Round(time.Minute))}
	}
	if !Usable(c.Identity) {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "no_identifier",
			Detail: "needs a hashed email, phone or other customer parameter, a lead id, or an fbc/fbp click"}
	}
	return nil
}

// Request body types (meta_capi.json: EventRequest).
type (
	eventRequest struct {
		Data          []event `json:"data"`
		TestEventCode string  `json:"test_event_code,omitempty"`
	}
	event struct {
		EventName    string      `json:"event_name"`
		EventTime    int64       `json:"event_time"`
		EventID      string      `json:"event_id"`
		ActionSource string      `json:"action_source"`
		UserData     userDataT   `json:"user_data"`
		CustomData   *customData `json:"custom_data,omitempty"`
	}
	userDataT struct {
		Em         []string `json:"em,omitempty"`
		Ph         []string `json:"ph,omitempty"`
		Fn         []string `json:"fn,omitempty"`
		Ln         []string `json:"ln,omitempty"`
		Db         []string `json:"db,omitempty"`
		Ge         []string `json:"ge,omitempty"`
		Ct         []string `json:"ct,omitempty"`
		St         []string `json:"st,omitempty"`
		Zp         []string `json:"zp,omitempty"`
		Country    []string `json:"country,omitempty"`
		ExternalID []string `json:"external_id,omitempty"`
		Fbc        string   `json:"fbc,omitempty"`
		Fbp        string   `json:"fbp,omitempty"`
		LeadID     int64    `json:"lead_id,omitempty"`
	}
	customData struct {
		EventSource     string   `json:"event_source,omitempty"`
		LeadEventSource string   `json:"lead_event_source,omitempty"`
		Value           *float64 `json:"value,omitempty"`
		Currency        string   `json:"currency,omitempty"`
	}
)

func one(h string) []string {
	if h == "" {
		return nil
	}
	return []string{h}
}

func userData(c *store.Conversion) userDataT {
	ids := c.Identity.Identifiers
	u := userDataT{
		Em:         one(ids.Get(pii.KeyEmail)),
		Ph:         one(ids.Get(pii.KeyPhoneDigits)),
		Fn:         one(ids.Get(pii.KeyFirstName)),
		Ln:         one(ids.Get(pii.KeyLastName)),
		Db:         one(ids.Get(pii.KeyDateOfBirth)),
		Ge:         one(ids.Get(pii.KeyGender)),
		Ct:         one(ids.Get(pii.KeyCity)),
		St:         one(ids.Get(pii.KeyState)),
		Zp:         one(ids.Get(pii.KeyZip)),
		Country:    one(ids.Get(pii.KeyCountry)),
		ExternalID: one(ids.Get(pii.KeyExternalID)),
	}
	if leadID.MatchString(c.Identity.LeadID) {
		u.LeadID, _ = strconv.ParseInt(c.Identity.LeadID, 10, 64)
	}
	for _, cl := range c.Identity.Clicks {
		switch cl.Type {
		case "fbc":
			u.Fbc = cl.ID
		case "fbp":
			u.Fbp = cl.ID
		}
	}
	if u.Fbc == "" {
		for _, cl := range c.Identity.Clicks {
			if cl.Type == "fbclid" && cl.ID != "" && !cl.At.IsZero() {
				// Meta's fbc format: fb.{subdomain index}.{creation time ms}.{fbclid}.
				u.Fbc = fmt.Sprintf("fb.1.%d.%s", cl.At.UnixMilli(), cl.ID)
			}
		}
	}
	return u
}

// Body returns the exact JSON body BuildRequest sends; it holds no credentials.
func (p *Platform) Body(batch []store.Conversion) ([]byte, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return nil, fmt.Errorf("meta: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	req := eventRequest{TestEventCode: p.set.TestEventCode, Data: make([]event, 0, len(batch))}
	for i := range batch {
		c := &batch[i]
		if c.Kind == store.KindRetraction {
			return nil, fmt.Errorf("meta: row %d is a retraction; Check skips those", i)
		}
		ev := event{
			EventName:    c.ConversionName,
			EventTime:    c.OccurredAt.Unix(),
			EventID:      c.Key,
			ActionSource: "system_generated",
			UserData:     userData(c),
		}
		cd := customData{}
		if ev.UserData.LeadID != 0 {
			cd.EventSource = "crm"
			cd.LeadEventSource = p.set.LeadEventSource
			if cd.LeadEventSource == "" {
				cd.LeadEventSource = c.Source
			}
		}
		if c.Value != nil {
			v := *c.Value
			cd.Value, cd.Currency = &v, c.Currency
		}
		if cd != (customData{}) {
			ev.CustomData = &cd
		}
		req.Data = append(req.Data, ev)
	}
	return json.Marshal(req)
}

// BuildRequest builds `POST {base}/{version}/{dataset_id}/events` with the token in an
// Authorization header.
func (p *Platform) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	body, err := p.Body(batch)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s/%s/%s/events", strings.TrimRight(p.cfg.BaseURL, "/"), p.cfg.APIVersion, p.set.DatasetID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.set.AccessToken)
	return req, nil
}

// graphError is the Graph API error body.
type graphError struct {
	Error struct {
		Message      string `json:"message"`
		Type         string `json:"type"`
		Code         int    `json:"code"`
		ErrorSubcode int    `json:"error_subcode"`
		IsTransient  bool   `json:"is_transient"`
		UserTitle    string `json:"error_user_title"`
		UserMsg      string `json:"error_user_msg"`
		FbtraceID    string `json:"fbtrace_id"`
	} `json:"error"`
}

// ParseResponse: 2xx with events_received → every row accepted; a Graph error → the
// class ErrorClass gives (BatchRejected for invalid events, Setup for token/permission
// problems, Transient for throttling and temporary failures).
func (p *Platform) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	var ge graphError
	_ = json.Unmarshal(body, &ge)
	if resp.StatusCode/100 == 2 && ge.Error.Code == 0 {
		var ok struct {
			EventsReceived *int   `json:"events_received"`
			FbtraceID      string `json:"fbtrace_id"`
		}
		if err := json.Unmarshal(body, &ok); err != nil || ok.EventsReceived == nil {
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "unparseable_response", Detail: "events answered 2xx without events_received"}
		}
		r := uploader.RowResult{Class: uploader.ClassAccepted, Reason: "events_received"}
		if *ok.EventsReceived != len(batch) {
			r.Detail = fmt.Sprintf("Meta counted %d of %d events (fbtrace_id %s)", *ok.EventsReceived, len(batch), ok.FbtraceID)
		}
		return uploader.AllRows(len(batch), r), nil
	}
	e := ge.Error
	if e.Code == 0 {
		// Not a Graph error body: classify by status alone.
		switch {
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: http.StatusText(resp.StatusCode), RetryAfter: retryAfter(resp.Header)}
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: http.StatusText(resp.StatusCode)}
		default:
			return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "HTTP_" + strconv.Itoa(resp.StatusCode), Detail: "answered without a Graph error body"}
		}
	}
	reason := strconv.Itoa(e.Code)
	if e.ErrorSubcode != 0 {
		reason += "/" + strconv.Itoa(e.ErrorSubcode)
	}
	detail := e.Message
	if e.UserMsg != "" {
		detail += " — " + e.UserMsg
	}
	detail = uploader.Truncate(detail+" (fbtrace_id "+e.FbtraceID+")", 500)
	class, wait := ErrorClass(e.Code, e.ErrorSubcode, e.IsTransient, resp.StatusCode)
	if ra := retryAfter(resp.Header); ra > 0 {
		wait = ra
	}
	if class == uploader.ClassPermanent {
		// Meta rejects the whole batch for an invalid event without always naming it: bisect.
		return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: reason, Detail: detail}
	}
	return nil, &uploader.Error{Class: class, Reason: reason, Detail: detail, RetryAfter: wait}
}

// ErrorClass classifies a Graph API error (platforms.md 2.5): ClassTransient with a wait,
// ClassSetup, ClassPermanent (for a batch: the whole batch was rejected for some invalid
// event; bisect it), or ClassUnknown for a code this package does not know (the rows are
// retried, never rejected).
//
//	190 (token expired/invalid), 102 (session), 104 (no token), 10 and 200–299
//	(permission), 3 (capability), 100/33 (dataset missing or no access)      → setup
//	4, 17, 32, 613, 80003, 80004 (throttling)                               → transient, 5 min
//	341 (limit reached), 368 (temporarily blocked)                          → transient, 15 min
//	1, 2, 5000 (unknown / service) and any error with is_transient          → transient
//	100 (invalid parameter, incl. subcodes 2804xxx such as 2804003
//	"event sent after seven days")                                          → permanent (batch)
//	anything else: 5xx → transient, 401/403 → setup, otherwise unknown.
func ErrorClass(code, subcode int, isTransient bool, httpStatus int) (uploader.Class, time.Duration) {
	switch {
	case code == 190 || code == 102 || code == 104 || code == 10 || code == 3 || (code >= 200 && code <= 299):
		return uploader.ClassSetup, 0
	case code == 100 && subcode == 33:
		return uploader.ClassSetup, 0
	case code == 4 || code == 17 || code == 32 || code == 613 || code == 80003 || code == 80004:
		return uploader.ClassTransient, 5 * time.Minute
	case code == 341 || code == 368:
		return uploader.ClassTransient, 15 * time.Minute
	case code == 1 || code == 2 || code == 5000 || isTransient:
		return uploader.ClassTransient, 0
	case code == 100:
		return uploader.ClassPermanent, 0
	case httpStatus >= 500 || httpStatus == http.StatusTooManyRequests:
		return uploader.ClassTransient, 0
	case httpStatus == http.StatusUnauthorized || httpStatus == http.StatusForbidden:
		return uploader.ClassSetup, 0
	}
	return uploader.ClassUnknown, 0
}

func retryAfter(h http.Header) time.Duration {
	d, _ := uploader.RetryAfter(h, time.Now())
	return d
}
