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

// Close (API v1): GET /api/v1/opportunity/{id}/ (value in cents, value_currency, lead_id)
// then GET /api/v1/lead/{id}/ whose contacts[] carry emails[{email}] and phones[{phone}].
// Auth: HTTP basic with the API key as user name and an empty password. A 429's body says
// how long to wait in error.rate_reset (seconds); Retry-After is honoured too.

type closeCRM struct{ httpClient }

func newClose(conn Connection, hc *http.Client, norm pii.Normalizer) *closeCRM {
	c := &closeCRM{newHTTPClient(conn, hc, norm)}
	key := conn.Token
	c.auth = func(r *http.Request) { r.SetBasicAuth(key, "") }
	base := c.retryAfter
	c.retryAfter = func(h http.Header, body []byte) time.Duration {
		var b struct {
			Error struct {
				RateReset float64 `json:"rate_reset"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &b) == nil && b.Error.RateReset > 0 {
			return time.Duration(b.Error.RateReset * float64(time.Second))
		}
		return base(h, body)
	}
	return c
}

func (c *closeCRM) FetchDeals(ctx context.Context, ids []string) (Fetched, error) {
	out := Fetched{Deals: map[string]Deal{}, Contacts: map[string]Contact{}}
	leads := map[string][]string{} // lead → contact ids, fetched once per call
	for _, id := range ids {
		var opp struct {
			LeadID        string          `json:"lead_id"`
			Value         json.RawMessage `json:"value"`
			ValueCurrency string          `json:"value_currency"`
			ContactID     string          `json:"contact_id"`
		}
		notFound, _, err := c.do(ctx, http.MethodGet, "/api/v1/opportunity/"+url.PathEscape(id)+"/", nil, &opp)
		if err != nil {
			return out, err
		}
		if notFound {
			continue
		}
		d := Deal{ID: id, Currency: strings.ToUpper(strings.TrimSpace(opp.ValueCurrency))}
		if cents, err := decimal.NewFromString(strings.Trim(string(opp.Value), `"`)); err == nil && !cents.IsNegative() {
			a := cents.Shift(-2)
			d.Amount = &a
		}
		if opp.ContactID != "" {
			d.ContactIDs = append(d.ContactIDs, opp.ContactID)
		}
		if opp.LeadID != "" {
			d.Properties = map[string]string{"crm_lead_id": opp.LeadID}
			contacts, ok := leads[opp.LeadID]
			if !ok {
				if contacts, err = c.lead(ctx, opp.LeadID, out.Contacts); err != nil {
					return out, err
				}
				leads[opp.LeadID] = contacts
			}
			for _, cid := range contacts {
				if cid != opp.ContactID {
					d.ContactIDs = append(d.ContactIDs, cid)
				}
			}
		}
		out.Deals[id] = d
	}
	return out, nil
}

// lead fetches one lead and hashes its contacts into into; it returns their ids.
func (c *closeCRM) lead(ctx context.Context, id string, into map[string]Contact) ([]string, error) {
	var lead struct {
		Contacts []struct {
			ID     string `json:"id"`
			Emails []struct {
				Email string `json:"email"`
			} `json:"emails"`
			Phones []struct {
				Phone string `json:"phone"`
			} `json:"phones"`
		} `json:"contacts"`
	}
	notFound, _, err := c.do(ctx, http.MethodGet, "/api/v1/lead/"+url.PathEscape(id)+"/", nil, &lead)
	if err != nil || notFound {
		return nil, err
	}
	ids := make([]string, 0, len(lead.Contacts))
	for _, ct := range lead.Contacts {
		var emails, phones []string
		for _, e := range ct.Emails {
			emails = append(emails, e.Email)
		}
		for _, p := range ct.Phones {
			phones = append(phones, p.Phone)
		}
		into[ct.ID] = c.hashContact(ct.ID, emails, phones, nil)
		ids = append(ids, ct.ID)
	}
	return ids, nil
}

// FetchContacts is not needed for Close (a lead's contacts come with the lead); it reads
// nothing and finds nothing, so the enricher relies on FetchDeals' Contacts.
func (c *closeCRM) FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error) {
	return map[string]Contact{}, nil
}
