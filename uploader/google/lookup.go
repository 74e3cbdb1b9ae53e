package google

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// ImportableType is the conversion action type offline click conversions (and enhanced
// conversions for leads) are uploaded to, on both surfaces.
const ImportableType = "UPLOAD_CLICKS"

var (
	_ uploader.Tester       = (*AdsAPI)(nil)
	_ uploader.Tester       = (*DataManager)(nil)
	_ uploader.NameResolver = (*AdsAPI)(nil)
)

// ConversionAction is a conversion action as `googleAds:search` reports it.
type ConversionAction struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	Type          string `json:"type"`
	OwnerCustomer string `json:"ownerCustomer"` // customers/{id}
}

func (c ConversionAction) owner() string { return strings.TrimPrefix(c.OwnerCustomer, "customers/") }

func (c ConversionAction) String() string {
	return fmt.Sprintf("id %s (%s, %s, owned by customer %s)", c.ID, c.Type, c.Status, c.owner())
}

// problem says why rows cannot be uploaded to c from customer cid; "" when they can.
func (c ConversionAction) problem(cid string) string {
	switch {
	case c.Status != "ENABLED":
		return fmt.Sprintf("conversion action %s %q is %s; only an ENABLED action takes uploads", c.ID, c.Name, c.Status)
	case c.Type != ImportableType:
		return fmt.Sprintf("conversion action %s %q is of type %s; offline conversions need an %s action (\"Import from clicks\")", c.ID, c.Name, c.Type, ImportableType)
	case c.owner() != cid:
		return fmt.Sprintf("conversion action %s %q belongs to customer %s, not customer_id %s: uploads must go to the account that owns the action", c.ID, c.Name, c.owner(), cid)
	}
	return ""
}

const actionFields = "conversion_action.id, conversion_action.name, conversion_action.status, conversion_action.type, conversion_action.owner_customer"

// search runs one GAQL query with `POST {base}/{ver}/customers/{cid}/googleAds:search`. A 401
// drops the token and is tried once more with a fresh one; a second 401 is setup.
func (a *AdsAPI) search(ctx context.Context, client *http.Client, query string) ([]json.RawMessage, error) {
	body, _ := json.Marshal(map[string]string{"query": query})
	for attempt := 0; ; attempt++ {
		token, err := a.tokens.AccessToken(ctx)
		if err != nil {
			return nil, err
		}
		u := fmt.Sprintf("%s/%s/customers/%s/googleAds:search", strings.TrimRight(a.cfg.BaseURL, "/"), a.cfg.APIVersion, a.set.CustomerID)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		if a.set.LoginCustomerID != "" {
			req.Header.Set("login-customer-id", a.set.LoginCustomerID)
		}
		raw, resp, err := uploader.Do(client, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 == 2 {
			var ok struct {
				Results []json.RawMessage `json:"results"`
			}
			if err := json.Unmarshal(raw, &ok); err != nil {
				return nil, &uploader.Error{Class: uploader.ClassUnknown, Reason: "unparseable_response", Detail: "googleAds:search answered 2xx with a body that is not JSON"}
			}
			return ok.Results, nil
		}
		p := parseGoogleError(raw)
		if resp.StatusCode == http.StatusUnauthorized {
			if e := unauthorized(a.tokens, p); uploader.AsError(e).Refreshed && attempt == 0 {
				continue
			} else {
				return nil, e
			}
		}
		if len(p.adsErrors) > 0 {
			_, enum := p.adsErrors[0].code()
			return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: enum, Detail: uploader.Truncate(p.adsErrors[0].Message, 300)}
		}
		return nil, classifyHTTP(resp, p, adsSetupReasons)
	}
}

func (a *AdsAPI) actions(ctx context.Context, client *http.Client, where string) ([]ConversionAction, error) {
	rows, err := a.search(ctx, client, "SELECT "+actionFields+" FROM conversion_action WHERE "+where)
	if err != nil {
		return nil, err
	}
	out := make([]ConversionAction, 0, len(rows))
	for _, r := range rows {
		var row struct {
			ConversionAction ConversionAction `json:"conversionAction"`
		}
		if json.Unmarshal(r, &row) == nil {
			out = append(out, row.ConversionAction)
		}
	}
	return out, nil
}

// gaqlString quotes s as a GAQL string literal.
func gaqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// ResolveConversion returns the id of the one conversion action called name that the
// configured customer can upload to. A name no action has, a name several actions have (the
// same name under the manager and the client account), or the one action of that name being
// removed, of another type or owned by another customer is an error naming every candidate
// with its id and owner.
func (a *AdsAPI) ResolveConversion(ctx context.Context, name string) (string, error) {
	client := &http.Client{Timeout: a.cfg.Timeout}
	found, err := a.actions(ctx, client, "conversion_action.name = "+gaqlString(name))
	if err != nil {
		e := uploader.AsError(err)
		return "", fmt.Errorf("looking up conversion action %q in customer %s: %s: %s", name, a.set.CustomerID, e.Reason, e.Detail)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].ID < found[j].ID })
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("no conversion action named %q is visible to customer %s", name, a.set.CustomerID)
	case len(found) > 1:
		c := make([]string, len(found))
		for i, f := range found {
			c[i] = f.String()
		}
		return "", fmt.Errorf("conversion action name %q is ambiguous in customer %s: %s; give the id instead", name, a.set.CustomerID, strings.Join(c, "; "))
	}
	if p := found[0].problem(a.set.CustomerID); p != "" {
		return "", fmt.Errorf("the one conversion action named %q cannot be used: %s", name, p)
	}
	return found[0].ID, nil
}

// Test checks, in order: credentials (a token is obtained and accepted), the customer is
// reachable (`SELECT customer.id FROM customer`), each conversion action exists, is ENABLED,
// of type UPLOAD_CLICKS and owned by customer_id (`googleAds:search` over
// conversion_action), the API version, and with SendTestEvent one conversion uploaded with
// validateOnly (nothing is recorded).
func (a *AdsAPI) Test(ctx context.Context, req uploader.TestRequest) []uploader.CheckResult {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	client := uploader.TestClient(req.Client, a.cfg.Timeout)
	cid := a.set.CustomerID
	version := uploader.VersionCheck(AdsSpec(), a.cfg.APIVersion, now, uploader.SunsetWarnFor)

	if _, err := a.tokens.AccessToken(ctx); err != nil {
		return append([]uploader.CheckResult{uploader.ResultOf(uploader.CheckCredentials, "", err)}, uploader.Rest(req, "credentials failed", cid, version)...)
	}
	out := []uploader.CheckResult{{Check: uploader.CheckCredentials, Status: uploader.CheckOK, Detail: "access token obtained"}}
	if _, err := a.search(ctx, client, "SELECT customer.id, customer.descriptive_name FROM customer"); err != nil {
		if e := uploader.AsError(err); e.Reason == "UNAUTHENTICATED" || strings.HasPrefix(e.Reason, "oauth_") {
			out[0] = uploader.ResultOf(uploader.CheckCredentials, "", err)
			return append(out, uploader.Rest(req, "credentials failed", cid, version)...)
		}
		out = append(out, uploader.ResultOf(uploader.CheckAccount, cid, err))
		return append(out, uploader.Rest(req, "account not reachable", "", version)...)
	}
	out = append(out, uploader.CheckResult{Check: uploader.CheckAccount, Target: cid, Status: uploader.CheckOK, Detail: "customer " + cid + " reachable"})

	convOK := true
	if len(req.Conversions) > 0 {
		ids := make([]string, 0, len(req.Conversions))
		for _, c := range req.Conversions {
			if numericID.MatchString(c) {
				ids = append(ids, c)
			}
		}
		var found []ConversionAction
		var err error
		if len(ids) > 0 {
			found, err = a.actions(ctx, client, "conversion_action.id IN ("+strings.Join(ids, ", ")+")")
		}
		for _, c := range req.Conversions {
			r := uploader.CheckResult{Check: uploader.CheckConversion, Target: c}
			switch {
			case err != nil:
				r = uploader.ResultOf(uploader.CheckConversion, c, err)
			case !numericID.MatchString(c):
				r.Status, r.Detail = uploader.CheckFailed, "not a numeric conversion action id"
			default:
				r.Status, r.Reason, r.Detail = uploader.CheckFailed, "NO_CONVERSION_ACTION_FOUND", "no conversion action with id "+c+" is visible to customer "+cid
				for _, f := range found {
					if f.ID != c {
						continue
					}
					if p := f.problem(cid); p != "" {
						r.Reason, r.Detail = "", p
					} else {
						r.Status, r.Reason, r.Detail = uploader.CheckOK, "", fmt.Sprintf("%q: %s, ENABLED, owned by customer %s", f.Name, f.Type, cid)
					}
				}
			}
			convOK = convOK && !r.Failed()
			out = append(out, r)
		}
	} else {
		out = append(out, uploader.CheckResult{Check: uploader.CheckConversion, Status: uploader.CheckSkipped, Detail: "no mapping sends to this destination"})
	}
	out = append(out, version)
	if !req.SendTestEvent {
		return out
	}
	switch {
	case len(req.Conversions) == 0:
		return append(out, uploader.CheckResult{Check: uploader.CheckTestEvent, Status: uploader.CheckSkipped, Detail: "no conversion action to send to"})
	case !convOK:
		return append(out, uploader.CheckResult{Check: uploader.CheckTestEvent, Target: req.Conversions[0], Status: uploader.CheckSkipped, Detail: "a conversion action check failed"})
	}
	test := *a
	set := *a.set
	set.ValidateOnly = true
	test.set = &set
	return append(out, testEvent(ctx, &test, client, req.Conversions[0], now,
		"uploadClickConversions with validateOnly accepted a test conversion (validated, nothing recorded)"))
}

// testEvent sends one test conversion to action through p (already in validate-only mode),
// once more after a refreshed token.
func testEvent(ctx context.Context, p uploader.Platform, client *http.Client, action string, now time.Time, okDetail string) uploader.CheckResult {
	batch := []store.Conversion{uploader.TestConversion(action, now)}
	var row uploader.RowResult
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		row, err = uploader.SendTest(ctx, p, client, batch, now)
		if err == nil || !uploader.AsError(err).Refreshed {
			break
		}
	}
	if err != nil {
		return uploader.ResultOf(uploader.CheckTestEvent, action, err)
	}
	if row.Class != uploader.ClassAccepted {
		return uploader.CheckResult{Check: uploader.CheckTestEvent, Target: action, Status: uploader.CheckFailed, Reason: row.Reason, Detail: row.Detail}
	}
	return uploader.CheckResult{Check: uploader.CheckTestEvent, Target: action, Status: uploader.CheckOK, Detail: okDetail}
}

// Test checks what the Data Manager API lets one check: credentials (a token is obtained),
// then each conversion action by a validateOnly events:ingest of one test event to it, with
// the configured operating (and login) account. Data Manager has no lookup of accounts or
// conversion actions: whether an action exists, is enabled, of an importable type and owned
// by the operating account is only what its ingest validation says, in its words; the
// account is checked by the same requests. SendTestEvent adds nothing beyond those
// validateOnly requests: validateOnly is Data Manager's only test mode, and nothing is
// ingested.
func (d *DataManager) Test(ctx context.Context, req uploader.TestRequest) []uploader.CheckResult {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	client := uploader.TestClient(req.Client, d.cfg.Timeout)
	cid := d.set.CustomerID
	version := uploader.VersionCheck(DataManagerSpec(), d.cfg.APIVersion, now, uploader.SunsetWarnFor)
	if _, err := d.tokens.AccessToken(ctx); err != nil {
		return append([]uploader.CheckResult{uploader.ResultOf(uploader.CheckCredentials, "", err)}, uploader.Rest(req, "credentials failed", cid, version)...)
	}
	out := []uploader.CheckResult{{Check: uploader.CheckCredentials, Status: uploader.CheckOK, Detail: "access token obtained"}}
	account := uploader.CheckResult{Check: uploader.CheckAccount, Target: cid, Status: uploader.CheckNone,
		Detail: "Data Manager has no account lookup; the operating account is validated with each conversion action below"}
	if len(req.Conversions) == 0 {
		out = append(out, account, uploader.CheckResult{Check: uploader.CheckConversion, Status: uploader.CheckSkipped, Detail: "no mapping sends to this destination"}, version)
		if req.SendTestEvent {
			out = append(out, uploader.CheckResult{Check: uploader.CheckTestEvent, Status: uploader.CheckSkipped, Detail: "no conversion action to send to"})
		}
		return out
	}
	test := *d
	set := *d.set
	set.ValidateOnly = true
	test.set = &set
	var convs []uploader.CheckResult
	for i, c := range req.Conversions {
		r := testEvent(ctx, &test, client, c, now, "a validateOnly events:ingest to it was accepted (Data Manager has no lookup: existence, status, type and owner are as far as its validation goes)")
		r.Check = uploader.CheckConversion
		if r.Failed() {
			switch e := r.Reason; {
			case e == "UNAUTHENTICATED" || strings.HasPrefix(e, "oauth_"):
				out[0] = uploader.CheckResult{Check: uploader.CheckCredentials, Status: uploader.CheckFailed, Reason: r.Reason, Detail: r.Detail}
				return append(out, uploader.Rest(req, "credentials failed", cid, version)...)
			case e == "PERMISSION_DENIED" || e == "INVALID_OPERATING_ACCT" || e == "INVALID_LOGIN_ACCOUNT":
				account.Status, account.Reason, account.Detail = uploader.CheckFailed, r.Reason, r.Detail
				out = append(out, account)
				rest := req
				rest.Conversions = req.Conversions[i:]
				return append(out, uploader.Rest(rest, "account refused", "", version)...)
			}
		}
		convs = append(convs, r)
	}
	out = append(out, account)
	out = append(out, convs...)
	out = append(out, version)
	if req.SendTestEvent {
		r := uploader.CheckResult{Check: uploader.CheckTestEvent, Target: req.Conversions[0], Status: convs[0].Status,
			Detail: "validateOnly is Data Manager's only test mode: the conversion checks above each sent a test event with it; nothing was ingested"}
		if convs[0].Failed() {
			r.Status, r.Detail = uploader.CheckSkipped, "a conversion action check failed"
		}
		out = append(out, r)
	}
	return out
}
