package enrich

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

// Attio (REST API v2, see crm/ENRICHMENT.md). Its webhooks name a record or list entry and
// the attribute that changed, nothing else (crm.ThinChange), so a "deal" id here is a
// crm.AttioRef:
//
//	GET /v2/objects/{object}/records/{record_id}   values: the status attribute (title,
//	                                              active_from), value {currency_value,
//	                                              currency_code}, associated_people
//	GET /v2/lists/{list}/entries/{entry_id}       entry_values: the status attribute; then
//	                                              the parent record as above
//	GET /v2/objects/people/records/{record_id}    email_addresses, phone_numbers
//
// Auth: "Authorization: Bearer <access token>". A 429 carries Retry-After as an HTTP date
// (the next second, usually). Not found: 404 {"code": "not_found"}.

type attio struct{ httpClient }

func newAttio(conn Connection, hc *http.Client, norm pii.Normalizer) *attio {
	c := &attio{newHTTPClient(conn, hc, norm)}
	token := conn.Token
	c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	return c
}

// attioValue is one attribute value as Attio returns it; only the fields read are listed.
type attioValue struct {
	AttributeType string    `json:"attribute_type"`
	ActiveFrom    time.Time `json:"active_from"`
	Status        *struct {
		ID struct {
			AttributeID string `json:"attribute_id"`
		} `json:"id"`
		Title string `json:"title"`
	} `json:"status"`
	Option *struct {
		ID struct {
			AttributeID string `json:"attribute_id"`
		} `json:"id"`
		Title string `json:"title"`
	} `json:"option"`
	CurrencyValue         *decimal.Decimal `json:"currency_value"`
	CurrencyCode          string           `json:"currency_code"`
	TargetObject          string           `json:"target_object"`
	TargetRecordID        string           `json:"target_record_id"`
	EmailAddress          string           `json:"email_address"`
	OriginalPhoneNumber   string           `json:"original_phone_number"`
	NormalizedPhoneNumber string           `json:"normalized_phone_number"`
}

type attioValues map[string][]attioValue

// stage finds the status or select value of attribute (by id or slug).
func (v attioValues) stage(attribute string) (string, time.Time, bool) {
	for slug, list := range v {
		for _, x := range list {
			switch {
			case x.Status != nil && (x.Status.ID.AttributeID == attribute || slug == attribute):
				return x.Status.Title, x.ActiveFrom, true
			case x.Option != nil && (x.Option.ID.AttributeID == attribute || slug == attribute):
				return x.Option.Title, x.ActiveFrom, true
			}
		}
	}
	return "", time.Time{}, false
}

// fill sets the deal's value (the "value" currency attribute, else the first currency
// attribute) and its people (associated_people, else any reference to people).
func (v attioValues) fill(d *Deal) {
	pick := func(slug string, ok func(attioValue) bool) []attioValue {
		var out []attioValue
		for _, x := range v[slug] {
			if ok(x) {
				out = append(out, x)
			}
		}
		if len(out) > 0 {
			return out
		}
		for s, list := range v {
			if s == slug {
				continue
			}
			for _, x := range list {
				if ok(x) {
					out = append(out, x)
				}
			}
			if len(out) > 0 {
				return out
			}
		}
		return nil
	}
	if cur := pick("value", func(x attioValue) bool { return x.AttributeType == "currency" && x.CurrencyValue != nil }); len(cur) > 0 {
		if a := *cur[0].CurrencyValue; !a.IsNegative() {
			d.Amount = &a
		}
		d.Currency = strings.ToUpper(strings.TrimSpace(cur[0].CurrencyCode))
	}
	for _, x := range pick("associated_people", func(x attioValue) bool { return x.TargetObject == "people" && x.TargetRecordID != "" }) {
		if !contains(d.ContactIDs, x.TargetRecordID) {
			d.ContactIDs = append(d.ContactIDs, x.TargetRecordID)
		}
	}
}

func (c *attio) record(ctx context.Context, object, id string) (attioValues, bool, error) {
	var r struct {
		Data struct {
			Values attioValues `json:"values"`
		} `json:"data"`
	}
	notFound, _, err := c.do(ctx, http.MethodGet, "/v2/objects/"+url.PathEscape(object)+"/records/"+url.PathEscape(id), nil, &r)
	if err != nil || notFound {
		return nil, false, err
	}
	return r.Data.Values, true, nil
}

// FetchDeals reads each ref's record (and, for a list entry, the entry first). A plain
// record id (a relay's thin canonical stage change of source attio) is read as a record of
// the deals object, without a stage; anything else is not found. Deals fetched before a
// failing request are returned.
func (c *attio) FetchDeals(ctx context.Context, ids []string) (Fetched, error) {
	out := Fetched{Deals: map[string]Deal{}}
	for _, id := range ids {
		ref, ok := crm.ParseAttioRef(id)
		if !ok && crm.IsAttioID(id) {
			ref, ok = crm.AttioRef{Kind: "record", Object: "deals", Record: id}, true
		}
		if !ok {
			continue
		}
		d := Deal{ID: id, Pipeline: ref.Object}
		var stage string
		var since time.Time
		var isStage bool
		if ref.Kind == "entry" {
			var r struct {
				Data struct {
					ParentRecordID string      `json:"parent_record_id"`
					ParentObject   string      `json:"parent_object"`
					Values         attioValues `json:"entry_values"`
				} `json:"data"`
			}
			notFound, _, err := c.do(ctx, http.MethodGet, "/v2/lists/"+url.PathEscape(ref.List)+"/entries/"+url.PathEscape(ref.Entry), nil, &r)
			if err != nil {
				return out, err
			}
			if notFound {
				continue
			}
			d.Pipeline = ref.List
			stage, since, isStage = r.Data.Values.stage(ref.Attribute)
			if r.Data.ParentObject == "people" {
				d.ContactIDs = []string{r.Data.ParentRecordID}
			} else if r.Data.ParentRecordID != "" {
				values, found, err := c.record(ctx, ref.Object, r.Data.ParentRecordID)
				if err != nil {
					return out, err
				}
				if found {
					values.fill(&d)
				}
			}
		} else {
			values, found, err := c.record(ctx, ref.Object, ref.Record)
			if err != nil {
				return out, err
			}
			if !found {
				continue
			}
			stage, since, isStage = values.stage(ref.Attribute)
			values.fill(&d)
		}
		if isStage && strings.TrimSpace(stage) != "" {
			d.Stage = strings.TrimSpace(stage)
			if !since.IsZero() {
				t := since.UTC()
				d.StageAt = &t
			}
		}
		out.Deals[id] = d
	}
	return out, nil
}

// FetchContacts reads people records, one request each (Attio's records query endpoint
// could batch them; its filter on record ids is not confirmed, see crm/ENRICHMENT.md).
func (c *attio) FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error) {
	out := map[string]Contact{}
	for _, id := range ids {
		values, found, err := c.record(ctx, "people", id)
		if err != nil {
			return out, err
		}
		if !found {
			continue
		}
		var emails, phones []string
		for _, e := range values["email_addresses"] {
			emails = append(emails, e.EmailAddress)
		}
		for _, p := range values["phone_numbers"] {
			if p.NormalizedPhoneNumber != "" {
				phones = append(phones, p.NormalizedPhoneNumber)
			} else {
				phones = append(phones, p.OriginalPhoneNumber)
			}
		}
		out[id] = c.hashContact(id, emails, phones, nil)
	}
	return out, nil
}
