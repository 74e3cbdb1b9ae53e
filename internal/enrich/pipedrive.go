package enrich

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/internal/pii"
)

// Pipedrive (API v2): GET /api/v2/deals/{id} (value, currency, person_id) and
// GET /api/v2/persons/{id} (emails[], phones[] of {value, primary, label}). Auth: the
// x-api-token header. A 429 carries Retry-After and x-ratelimit-reset (seconds).

type pipedrive struct{ httpClient }

func newPipedrive(conn Connection, hc *http.Client, norm pii.Normalizer) *pipedrive {
	c := &pipedrive{newHTTPClient(conn, hc, norm)}
	token := conn.Token
	c.auth = func(r *http.Request) { r.Header.Set("x-api-token", token) }
	base := c.retryAfter
	c.retryAfter = func(h http.Header, body []byte) time.Duration {
		if v := base(h, body); v > 0 {
			return v
		}
		return retryAfterHeader(h.Get("x-ratelimit-reset"))
	}
	return c
}

type pipedriveResp struct {
	Success bool `json:"success"`
	Data    struct {
		ID       json.Number     `json:"id"`
		Value    json.RawMessage `json:"value"`
		Currency string          `json:"currency"`
		PersonID json.RawMessage `json:"person_id"`
		Emails   []struct {
			Value string `json:"value"`
		} `json:"emails"`
		Phones []struct {
			Value string `json:"value"`
		} `json:"phones"`
	} `json:"data"`
}

func (c *pipedrive) FetchDeals(ctx context.Context, ids []string) (Fetched, error) {
	out := Fetched{Deals: map[string]Deal{}}
	for _, id := range ids {
		var r pipedriveResp
		notFound, _, err := c.do(ctx, http.MethodGet, "/api/v2/deals/"+url.PathEscape(id), nil, &r)
		if err != nil {
			return out, err
		}
		if notFound || !r.Success {
			continue
		}
		d := Deal{ID: id, Currency: strings.ToUpper(strings.TrimSpace(r.Data.Currency))}
		if a, err := decimal.NewFromString(strings.Trim(string(r.Data.Value), `"`)); err == nil && !a.IsNegative() {
			d.Amount = &a
		}
		if p := pipedriveRefID(r.Data.PersonID); p != "" {
			d.ContactIDs = []string{p}
		}
		out.Deals[id] = d
	}
	return out, nil
}

// pipedriveRefID reads person_id: a number, a string, or {"value": n} (v1-shaped answers).
func pipedriveRefID(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return ""
	}
	var obj struct {
		Value json.Number `json:"value"`
	}
	if strings.HasPrefix(s, "{") {
		if json.Unmarshal(raw, &obj) == nil {
			return obj.Value.String()
		}
		return ""
	}
	return strings.Trim(s, `"`)
}

func (c *pipedrive) FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error) {
	out := map[string]Contact{}
	for _, id := range ids {
		var r pipedriveResp
		notFound, _, err := c.do(ctx, http.MethodGet, "/api/v2/persons/"+url.PathEscape(id), nil, &r)
		if err != nil {
			return out, err
		}
		if notFound || !r.Success {
			continue
		}
		var emails, phones []string
		for _, e := range r.Data.Emails {
			emails = append(emails, e.Value)
		}
		for _, p := range r.Data.Phones {
			phones = append(phones, p.Value)
		}
		out[id] = c.hashContact(id, emails, phones, nil)
	}
	return out, nil
}
