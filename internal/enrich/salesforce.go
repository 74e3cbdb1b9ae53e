package enrich

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shopspring/decimal"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/oauthtoken"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/uploader"
)

// Salesforce (REST API, see crm/ENRICHMENT.md): one SOQL query per up to 100
// opportunities returns their amount, currency and contact roles' contacts together:
//
//	GET /services/data/v62.0/query?q=SELECT Id, Amount, CurrencyIsoCode,
//	    (SELECT ContactId, Contact.Email, Contact.Phone, Contact.MobilePhone FROM OpportunityContactRoles)
//	    FROM Opportunity WHERE Id IN ('006...', ...)
//
// Auth: OAuth 2.0 bearer token (refresh-token flow through internal/oauthtoken, or a fixed
// token). A 401 INVALID_SESSION_ID on a cached token refreshes it and resends once; a
// refused fresh token pauses the connection. 403 REQUEST_LIMIT_EXCEEDED (the org's rolling
// 24-hour API allocation) is transient: the rows retry after salesforceLimitWait. Errors
// are a JSON array of {message, errorCode}. An opportunity absent from the records was not
// found; a 404 from the query resource is a failed request (a wrong API version), never
// "not found" for every row.

// salesforceBatchMax is how many ids one query names (the URL stays a few KB long).
const salesforceBatchMax = 100

// salesforceLimitWait is how long rows wait after REQUEST_LIMIT_EXCEEDED: the allocation
// is a rolling 24-hour window, so there is no reset time to honour.
const salesforceLimitWait = 15 * time.Minute

type salesforce struct {
	httpClient
	tokens  *oauthtoken.Tokens
	version string
	// noCurrency is set once the org answered INVALID_FIELD for CurrencyIsoCode (a
	// single-currency org has no such field): later queries leave it out.
	noCurrency atomic.Bool
}

func newSalesforce(conn Connection, hc *http.Client, norm pii.Normalizer) *salesforce {
	c := &salesforce{httpClient: newHTTPClient(conn, hc, norm), version: conn.APIVersion}
	tokenClient := hc
	if tokenClient == nil {
		tokenClient = &http.Client{Timeout: conn.Timeout}
	}
	c.tokens = oauthtoken.New(oauthtoken.Config{ClientID: conn.ClientID, ClientSecret: conn.ClientSecret,
		RefreshToken: conn.RefreshToken, TokenURL: conn.TokenURL, Fixed: conn.Token}, tokenClient, zap.NewNop())
	c.authCtx = func(ctx context.Context, r *http.Request) error {
		tok, err := c.tokens.AccessToken(ctx)
		if err != nil {
			return tokenError(err)
		}
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}
	c.notFoundIsError = true
	c.refusal = salesforceRefusal
	return c
}

// tokenError turns a token refresh failure into a FetchError: a refused refresh is setup
// (pause), an unreachable token endpoint transient.
func tokenError(err error) error {
	var ue *uploader.Error
	if !errors.As(err, &ue) {
		return err // ctx cancelled
	}
	if ue.Class == uploader.ClassSetup {
		return &FetchError{Class: ClassSetup, Status: http.StatusUnauthorized, Detail: cutDetail(ue.Reason + ": " + ue.Detail)}
	}
	return &FetchError{Class: ClassTransient, Detail: cutDetail(ue.Reason + ": " + ue.Detail)}
}

// salesforceError is one element of Salesforce's error array.
type salesforceError struct {
	Message   string `json:"message"`
	ErrorCode string `json:"errorCode"`
}

func salesforceErrors(body []byte) []salesforceError {
	var list []salesforceError
	if json.Unmarshal(body, &list) == nil {
		return list
	}
	var one salesforceError
	if json.Unmarshal(body, &one) == nil && one.ErrorCode != "" {
		return []salesforceError{one}
	}
	return nil
}

// salesforceRefusal classifies an error answer by its errorCode.
func salesforceRefusal(status int, h http.Header, body []byte) (string, string, time.Duration) {
	list := salesforceErrors(body)
	code, msg := "", "no message"
	if len(list) > 0 {
		code, msg = list[0].ErrorCode, list[0].Message
	}
	detail := cutDetail(strings.TrimSpace(code + ": " + msg))
	switch {
	case code == "REQUEST_LIMIT_EXCEEDED":
		return ClassTransient, detail, salesforceLimitWait
	case status == http.StatusTooManyRequests || status >= 500:
		return ClassTransient, detail, retryAfterHeader(h.Get("Retry-After"))
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ClassSetup, detail, 0
	}
	return ClassPermanent, detail, 0
}

func isSalesforceCode(err error, code string) bool {
	var fe *FetchError
	return errors.As(err, &fe) && strings.HasPrefix(fe.Detail, code+":")
}

// query runs one SOQL query, following nextRecordsUrl, and calls each with every page's
// records. A 401 on a cached token refreshes it and resends once.
func (c *salesforce) query(ctx context.Context, soql string, each func(json.RawMessage) error) error {
	path := "/services/data/" + c.version + "/query?q=" + url.QueryEscape(soql)
	for path != "" {
		var page struct {
			Done           bool              `json:"done"`
			NextRecordsURL string            `json:"nextRecordsUrl"`
			Records        []json.RawMessage `json:"records"`
		}
		_, status, err := c.do(ctx, http.MethodGet, path, nil, &page)
		if err != nil && status == http.StatusUnauthorized && !c.tokens.Invalidate() {
			_, _, err = c.do(ctx, http.MethodGet, path, nil, &page) // an expired session: once more, refreshed
		}
		if err != nil {
			var fe *FetchError
			if errors.As(err, &fe) && fe.Status == http.StatusUnauthorized {
				c.tokens.Invalidate()
			}
			return err
		}
		for _, r := range page.Records {
			if err := each(r); err != nil {
				return err
			}
		}
		path = ""
		if !page.Done && strings.HasPrefix(page.NextRecordsURL, "/services/data/") {
			path = page.NextRecordsURL
		}
	}
	return nil
}

// salesforceID reports whether id is a Salesforce record id (15 or 18 letters and
// digits): anything else is never put into a query.
func salesforceID(id string) bool {
	if len(id) != 15 && len(id) != 18 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// inList renders ids as a SOQL IN list; ids are checked with salesforceID first.
func inList(ids []string) string {
	return "('" + strings.Join(ids, "','") + "')"
}

type salesforceContact struct {
	ID          string `json:"Id"`
	Email       string `json:"Email"`
	Phone       string `json:"Phone"`
	MobilePhone string `json:"MobilePhone"`
}

func (c *salesforce) hash(ct salesforceContact) Contact {
	return c.hashContact(ct.ID, []string{ct.Email}, []string{ct.Phone, ct.MobilePhone}, nil)
}

// FetchDeals returns the opportunities of complete queries when a later query fails.
func (c *salesforce) FetchDeals(ctx context.Context, ids []string) (Fetched, error) {
	out := Fetched{Deals: map[string]Deal{}, Contacts: map[string]Contact{}}
	var valid []string
	for _, id := range ids {
		if salesforceID(id) {
			valid = append(valid, id) // others cannot exist: not found
		}
	}
	for start := 0; start < len(valid); start += salesforceBatchMax {
		chunk := valid[start:min(len(valid), start+salesforceBatchMax)]
		err := c.opportunities(ctx, chunk, &out, !c.noCurrency.Load())
		if err != nil && !c.noCurrency.Load() && isSalesforceCode(err, "INVALID_FIELD") {
			c.noCurrency.Store(true) // a single-currency org: no CurrencyIsoCode
			err = c.opportunities(ctx, chunk, &out, false)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (c *salesforce) opportunities(ctx context.Context, ids []string, out *Fetched, currency bool) error {
	fields := "Id, Amount"
	if currency {
		fields += ", CurrencyIsoCode"
	}
	soql := "SELECT " + fields + ", (SELECT ContactId, Contact.Id, Contact.Email, Contact.Phone, Contact.MobilePhone FROM OpportunityContactRoles) FROM Opportunity WHERE Id IN " + inList(ids)
	got := Fetched{Deals: map[string]Deal{}, Contacts: map[string]Contact{}}
	err := c.query(ctx, soql, func(raw json.RawMessage) error {
		var opp struct {
			ID              string           `json:"Id"`
			Amount          *decimal.Decimal `json:"Amount"`
			CurrencyIsoCode string           `json:"CurrencyIsoCode"`
			Roles           *struct {
				Records []struct {
					ContactID string             `json:"ContactId"`
					Contact   *salesforceContact `json:"Contact"`
				} `json:"records"`
			} `json:"OpportunityContactRoles"`
		}
		if err := json.Unmarshal(raw, &opp); err != nil || opp.ID == "" {
			return &FetchError{Class: ClassTransient, Detail: "query record is not an Opportunity"}
		}
		d := Deal{ID: opp.ID, Currency: strings.ToUpper(strings.TrimSpace(opp.CurrencyIsoCode))}
		if opp.Amount != nil && !opp.Amount.IsNegative() {
			a := *opp.Amount
			d.Amount = &a
		}
		if opp.Roles != nil {
			for _, r := range opp.Roles.Records {
				if r.ContactID == "" || contains(d.ContactIDs, r.ContactID) {
					continue
				}
				d.ContactIDs = append(d.ContactIDs, r.ContactID)
				if r.Contact != nil {
					ct := *r.Contact
					ct.ID = r.ContactID
					got.Contacts[r.ContactID] = c.hash(ct)
				}
			}
		}
		// Salesforce answers 18-character ids; the webhook may carry the 15-character form.
		for _, id := range ids {
			if id == opp.ID || (len(id) == 15 && strings.HasPrefix(opp.ID, id)) {
				d.ID = id
				got.Deals[id] = d
			}
		}
		return nil
	})
	if err != nil {
		return err // a query answered in pages is complete or not at all
	}
	for id, d := range got.Deals {
		out.Deals[id] = d
	}
	for id, ct := range got.Contacts {
		out.Contacts[id] = ct
	}
	return nil
}

// FetchContacts reads contacts by id (a deal's cached contact list outlived the contacts).
func (c *salesforce) FetchContacts(ctx context.Context, ids []string) (map[string]Contact, error) {
	out := map[string]Contact{}
	var valid []string
	for _, id := range ids {
		if salesforceID(id) {
			valid = append(valid, id)
		}
	}
	for start := 0; start < len(valid); start += salesforceBatchMax {
		chunk := valid[start:min(len(valid), start+salesforceBatchMax)]
		err := c.query(ctx, "SELECT Id, Email, Phone, MobilePhone FROM Contact WHERE Id IN "+inList(chunk), func(raw json.RawMessage) error {
			var ct salesforceContact
			if err := json.Unmarshal(raw, &ct); err != nil || ct.ID == "" {
				return &FetchError{Class: ClassTransient, Detail: "query record is not a Contact"}
			}
			for _, id := range chunk {
				if id == ct.ID || (len(id) == 15 && strings.HasPrefix(ct.ID, id)) {
					ct.ID = id
					out[id] = c.hash(ct)
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
