package enrich

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"golang.org/x/time/rate"

	"github.com/closedloop/closedloop/internal/pii"
)

// Deal is what closedloop keeps of a fetched deal or opportunity: never a raw email or
// phone. It is what the fetch cache stores.
type Deal struct {
	ID         string            `json:"id"`
	Amount     *decimal.Decimal  `json:"amount,omitempty"`
	Currency   string            `json:"currency,omitempty"`
	ContactIDs []string          `json:"contact_ids,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
	// Stage, StageAt and Pipeline are what a CRM whose webhooks carry no stage (Attio)
	// says the changed attribute holds now: its title, since when, and the object or list
	// it belongs to. Stage is empty when the attribute is not a stage (status or select).
	Stage    string     `json:"stage,omitempty"`
	StageAt  *time.Time `json:"stage_at,omitempty"`
	Pipeline string     `json:"pipeline,omitempty"`
}

// Contact is a fetched contact, already hashed: Identifiers holds SHA-256 hashes of its
// normalized emails and phones.
type Contact struct {
	ID          string            `json:"id"`
	Identifiers pii.Set           `json:"identifiers,omitempty"`
	ClickIDs    map[string]string `json:"click_ids,omitempty"`
}

// Fetched is the result of a deal fetch: the deals found (an id absent from Deals was not
// found: 404 or the CRM's not-found error) and any contacts the API returned with them
// (Close returns a lead's contacts with the lead).
type Fetched struct {
	Deals    map[string]Deal
	Contacts map[string]Contact
}

// Client reads one CRM account. Implementations make one attempt per request (the
// enricher retries rows durably) and wait on the connection's rate limiter before each.
type Client interface {
	FetchDeals(ctx context.Context, ids []string) (Fetched, error)
	// FetchContacts returns the contacts found, hashed; absent ids were not found.
	FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error)
}

// Classes of fetch failure.
const (
	ClassTransient = "transient" // 429, 5xx, timeouts: retry later
	ClassSetup     = "setup"     // 401, 403: pause the connection
	ClassPermanent = "permanent" // any other 4xx: the request itself is wrong
)

// FetchError is a failed request. RetryAfter is what the CRM asked to wait (0 = not said).
// Detail is the CRM's error message, cut short; it never holds a token or contact data.
type FetchError struct {
	Class      string
	Status     int
	RetryAfter time.Duration
	Detail     string
}

func (e *FetchError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("crm %s error: %s", e.Class, e.Detail)
	}
	return fmt.Sprintf("crm %s error: HTTP %d: %s", e.Class, e.Status, e.Detail)
}

// classify maps an HTTP status to a class.
func classify(status int) string {
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		return ClassTransient
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ClassSetup
	default:
		return ClassPermanent
	}
}

// httpClient is what every CRM client shares: base URL, auth, rate limiter, timeouts.
type httpClient struct {
	base    string
	hc      *http.Client
	limiter *rate.Limiter
	auth    func(*http.Request)
	// authCtx, when set, replaces auth: it may fetch a token (Salesforce OAuth).
	authCtx func(context.Context, *http.Request) error
	// refusal, when set, classifies a non-2xx answer from the CRM's own error body (class,
	// detail, retry-after); nil = by status alone.
	refusal func(status int, h http.Header, body []byte) (class, detail string, retryAfter time.Duration)
	// notFoundIsError: a 404 is a failed request, not an absent object (query APIs).
	notFoundIsError bool
	// retryAfter reads the CRM's own rate-limit headers and body of a 429.
	retryAfter func(h http.Header, body []byte) time.Duration
	norm       pii.Normalizer
}

func newHTTPClient(conn Connection, hc *http.Client, norm pii.Normalizer) httpClient {
	if hc == nil {
		hc = &http.Client{Timeout: conn.Timeout}
	}
	return httpClient{
		base: strings.TrimRight(conn.BaseURL, "/"), hc: hc,
		limiter: rate.NewLimiter(rate.Limit(conn.RateLimit), conn.Burst), norm: norm,
		retryAfter: func(h http.Header, _ []byte) time.Duration { return retryAfterHeader(h.Get("Retry-After")) },
	}
}

// maxBody bounds what is read of one response (a HubSpot batch of 100 contacts is far less).
const maxBody = 8 << 20

// do sends one request and decodes a 2xx JSON answer into out. notFound reports a 404
// (no error). Other failures are a *FetchError.
func (c *httpClient) do(ctx context.Context, method, path string, in, out any) (notFound bool, status int, err error) {
	if err := c.limiter.Wait(ctx); err != nil {
		return false, 0, err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return false, 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.authCtx != nil {
		if err := c.authCtx(ctx, req); err != nil {
			return false, 0, err
		}
	} else {
		c.auth(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, 0, ctx.Err()
		}
		// Transport errors and timeouts: the URL (never the token: it is in a header) and
		// the cause.
		return false, 0, &FetchError{Class: ClassTransient, Detail: cutDetail(err.Error())}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return false, resp.StatusCode, &FetchError{Class: ClassTransient, Status: resp.StatusCode, Detail: "reading the response: " + cutDetail(err.Error())}
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && !c.notFoundIsError:
		return true, resp.StatusCode, nil
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		if c.refusal != nil {
			class, detail, wait := c.refusal(resp.StatusCode, resp.Header, raw)
			return false, resp.StatusCode, &FetchError{Class: class, Status: resp.StatusCode, Detail: detail, RetryAfter: wait}
		}
		fe := &FetchError{Class: classify(resp.StatusCode), Status: resp.StatusCode, Detail: errorMessage(raw)}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			fe.RetryAfter = c.retryAfter(resp.Header, raw)
		}
		return false, resp.StatusCode, fe
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return false, resp.StatusCode, &FetchError{Class: ClassTransient, Status: resp.StatusCode, Detail: "response is not the expected JSON"}
		}
	}
	return false, resp.StatusCode, nil
}

// errorMessage pulls a short message out of a CRM error body ("message" for HubSpot,
// "error" for Pipedrive and Close), never the whole body.
func errorMessage(raw []byte) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return "non-JSON error body"
	}
	for _, k := range []string{"message", "error"} {
		switch v := m[k].(type) {
		case string:
			return cutDetail(v)
		case map[string]any:
			if s, ok := v["message"].(string); ok {
				return cutDetail(s)
			}
		}
	}
	return "no message"
}

func cutDetail(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// retryAfterHeader reads Retry-After as seconds or an HTTP date.
func retryAfterHeader(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// hashContact normalizes and hashes raw emails and phones into a Contact; values the
// normalizer refuses are dropped (never echoed).
func (c *httpClient) hashContact(id string, emails, phones []string, clicks map[string]string) Contact {
	out := Contact{ID: id, Identifiers: pii.Set{}}
	for _, e := range emails {
		if strings.TrimSpace(e) != "" {
			_ = c.norm.Add(out.Identifiers, pii.Email, e)
		}
	}
	for _, p := range phones {
		if strings.TrimSpace(p) != "" {
			_ = c.norm.Add(out.Identifiers, pii.Phone, p)
		}
	}
	if len(out.Identifiers) == 0 {
		out.Identifiers = nil
	}
	for k, v := range clicks {
		if v = strings.TrimSpace(v); v != "" {
			if out.ClickIDs == nil {
				out.ClickIDs = map[string]string{}
			}
			out.ClickIDs[k] = v
		}
	}
	return out
}

// NewClient returns the client for conn's kind. hc may be nil (a client with conn.Timeout).
func NewClient(conn Connection, hc *http.Client, norm pii.Normalizer) (Client, error) {
	conn = conn.WithDefaults()
	switch conn.Kind {
	case KindHubSpot:
		return newHubSpot(conn, hc, norm), nil
	case KindPipedrive:
		return newPipedrive(conn, hc, norm), nil
	case KindClose:
		return newClose(conn, hc, norm), nil
	case KindSalesforce:
		return newSalesforce(conn, hc, norm), nil
	case KindAttio:
		return newAttio(conn, hc, norm), nil
	}
	return nil, errors.New("enrich: unknown connection kind " + strconv.Quote(conn.Kind))
}
