package enrich

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/internal/pii"
)

// HubSpot: three batch reads of up to 100 ids each (see crm/ENRICHMENT.md):
//
//	POST /crm/v3/objects/deals/batch/read                 amount, deal_currency_code
//	POST /crm/v4/associations/deals/contacts/batch/read   the deals' contacts
//	POST /crm/v3/objects/contacts/batch/read              email, phone, mobilephone, click ids
//
// Auth: "Authorization: Bearer <private-app or OAuth access token>". A 429 carries
// X-HubSpot-RateLimit-Interval-Milliseconds (the window to wait out) and sometimes
// Retry-After; ids not found come back as a 207 with an OBJECT_NOT_FOUND error.

// hubspotBatchMax is HubSpot's limit of inputs per batch read.
const hubspotBatchMax = 100

// hubspotContactProps maps HubSpot contact properties to closedloop's click id types.
var hubspotClickProps = map[string]string{"hs_google_click_id": "gclid", "hs_facebook_click_id": "fbclid"}

type hubspot struct{ httpClient }

func newHubSpot(conn Connection, hc *http.Client, norm pii.Normalizer) *hubspot {
	c := &hubspot{newHTTPClient(conn, hc, norm)}
	token := conn.Token
	c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	c.retryAfter = func(h http.Header, _ []byte) time.Duration {
		if d := retryAfterHeader(h.Get("Retry-After")); d > 0 {
			return d
		}
		if ms, err := strconv.ParseInt(h.Get("X-HubSpot-RateLimit-Interval-Milliseconds"), 10, 64); err == nil && ms > 0 {
			if h.Get("X-HubSpot-RateLimit-Remaining") == "0" || h.Get("X-HubSpot-RateLimit-Remaining") == "" {
				return time.Duration(ms) * time.Millisecond
			}
		}
		return 0
	}
	return c
}

type hubspotInput struct {
	ID string `json:"id"`
}

type hubspotBatchResp struct {
	Results []struct {
		ID         string                     `json:"id"`
		Properties map[string]json.RawMessage `json:"properties"`
		From       struct {
			ID string `json:"id"`
		} `json:"from"`
		To []struct {
			ToObjectID json.Number `json:"toObjectId"`
		} `json:"to"`
	} `json:"results"`
}

// batch posts ids in chunks of 100 and calls each with every result page.
func (c *hubspot) batch(ctx context.Context, path string, ids []string, props []string, each func(hubspotBatchResp)) error {
	for start := 0; start < len(ids); start += hubspotBatchMax {
		chunk := ids[start:min(len(ids), start+hubspotBatchMax)]
		in := map[string]any{"inputs": toInputs(chunk)}
		if props != nil {
			in["properties"] = props
		}
		var out hubspotBatchResp
		if _, _, err := c.do(ctx, http.MethodPost, path, in, &out); err != nil {
			return err
		}
		each(out)
	}
	return nil
}

func toInputs(ids []string) []hubspotInput {
	out := make([]hubspotInput, len(ids))
	for i, id := range ids {
		out[i] = hubspotInput{ID: id}
	}
	return out
}

func hubspotProp(props map[string]json.RawMessage, name string) string {
	var s string
	if json.Unmarshal(props[name], &s) == nil {
		return strings.TrimSpace(s)
	}
	return ""
}

// FetchDeals returns the deals of complete batches when a later request fails.
func (c *hubspot) FetchDeals(ctx context.Context, ids []string) (Fetched, error) {
	out := Fetched{Deals: map[string]Deal{}}
	err := c.batch(ctx, "/crm/v3/objects/deals/batch/read", ids, []string{"amount", "deal_currency_code", "pipeline", "dealstage"}, func(r hubspotBatchResp) {
		for _, res := range r.Results {
			d := Deal{ID: res.ID, Currency: strings.ToUpper(hubspotProp(res.Properties, "deal_currency_code"))}
			if a, err := decimal.NewFromString(hubspotProp(res.Properties, "amount")); err == nil && !a.IsNegative() {
				d.Amount = &a
			}
			out.Deals[res.ID] = d
		}
	})
	if err != nil || len(out.Deals) == 0 {
		return out, err
	}
	found := make([]string, 0, len(out.Deals))
	for _, id := range ids {
		if _, ok := out.Deals[id]; ok {
			found = append(found, id)
		}
	}
	err = c.batch(ctx, "/crm/v4/associations/deals/contacts/batch/read", found, nil, func(r hubspotBatchResp) {
		for _, res := range r.Results {
			d, ok := out.Deals[res.From.ID]
			if !ok {
				continue
			}
			for _, to := range res.To {
				if s := to.ToObjectID.String(); s != "" {
					d.ContactIDs = append(d.ContactIDs, s)
				}
			}
			out.Deals[res.From.ID] = d
		}
	})
	if err != nil {
		// A deal without its associations is not complete: none is returned.
		return Fetched{}, err
	}
	return out, nil
}

func (c *hubspot) FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error) {
	out := map[string]Contact{}
	props := []string{"email", "phone", "mobilephone", "hs_google_click_id", "hs_facebook_click_id"}
	err := c.batch(ctx, "/crm/v3/objects/contacts/batch/read", ids, props, func(r hubspotBatchResp) {
		for _, res := range r.Results {
			clicks := map[string]string{}
			for prop, typ := range hubspotClickProps {
				clicks[typ] = hubspotProp(res.Properties, prop)
			}
			out[res.ID] = c.hashContact(res.ID,
				[]string{hubspotProp(res.Properties, "email")},
				[]string{hubspotProp(res.Properties, "phone"), hubspotProp(res.Properties, "mobilephone")}, clicks)
		}
	})
	return out, err
}
