package google

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// AdsDateTime is the Google Ads API date-time layout: "yyyy-mm-dd hh:mm:ss+hh:mm".
const AdsDateTime = "2006-01-02 15:04:05-07:00"

// MaxAdsUserIdentifiers is the most user identifiers one ClickConversion may carry.
const MaxAdsUserIdentifiers = 5

// AdsAPI uploads to the Google Ads API (platform "google_ads"): conversions with
// uploadClickConversions, retractions and restatements with uploadConversionAdjustments
// (RETRACTION / RESTATEMENT by orderId, the conversion key). It implements
// uploader.Platform and uploader.Grouper (conversions and adjustments never share a batch).
// Safe for concurrent use.
type AdsAPI struct {
	cfg    uploader.DestinationConfig
	set    *Settings
	tokens *tokens
	log    *zap.Logger
}

var (
	_ uploader.Platform = (*AdsAPI)(nil)
	_ uploader.Grouper  = (*AdsAPI)(nil)
)

// NewAdsAPI returns the Google Ads API platform for one destination (see NewDataManager).
func NewAdsAPI(cfg uploader.DestinationConfig, client *http.Client, log *zap.Logger) *AdsAPI {
	cfg = cfg.WithDefaults(AdsSpec())
	set, client := settingsOf(cfg, client)
	return &AdsAPI{cfg: cfg, set: set, tokens: newTokens(set, ScopeAdWords, client, log), log: log}
}

// MaxBatch is 2,000 conversions (or adjustments) per request.
func (a *AdsAPI) MaxBatch() int { return min(a.cfg.BatchSize, MaxBatch) }

// adjustmentGroup is the batch group of retractions and restatements.
const adjustmentGroup = "adjustment"

// BatchGroup separates conversions from adjustments: they go to different endpoints.
func (a *AdsAPI) BatchGroup(c *store.Conversion) string {
	if store.Adjustment(c.Kind) {
		return adjustmentGroup
	}
	return store.KindConversion
}

// Check: conversions follow Google's shared rules (see DataManager.Check); an adjustment
// needs the key of the conversion it adjusts (sent as orderId) and a numeric action, a
// restatement also a usable value and currency.
func (a *AdsAPI) Check(c *store.Conversion, now time.Time) *uploader.Error {
	if store.Adjustment(c.Kind) {
		if c.Kind == store.KindRestatement {
			if e := checkRestatement(c); e != nil {
				return e
			}
		}
		if c.RetractsKey == "" {
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_retracts_key", Detail: "a retraction must name the conversion it retracts"}
		}
		if !numericID.MatchString(c.ConversionName) {
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "invalid_conversion_action",
				Detail: fmt.Sprintf("conversion name must be the numeric conversion action ID, got %q", c.ConversionName)}
		}
		if c.OccurredAt.IsZero() {
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_event_time", Detail: "occurred_at is not set"}
		}
		return nil
	}
	return checkConversion(c, now, a.set.ClickWindow)
}

// Request body types (google_ads_upload.json).
type (
	adsClickRequest struct {
		Conversions    []adsClickConversion `json:"conversions"`
		PartialFailure bool                 `json:"partialFailure"`
		ValidateOnly   bool                 `json:"validateOnly,omitempty"`
	}
	adsClickConversion struct {
		Gclid              string              `json:"gclid,omitempty"`
		Gbraid             string              `json:"gbraid,omitempty"`
		Wbraid             string              `json:"wbraid,omitempty"`
		ConversionAction   string              `json:"conversionAction"`
		ConversionDateTime string              `json:"conversionDateTime"`
		ConversionValue    *float64            `json:"conversionValue,omitempty"`
		CurrencyCode       string              `json:"currencyCode,omitempty"`
		OrderID            string              `json:"orderId"`
		UserIdentifiers    []adsUserIdentifier `json:"userIdentifiers,omitempty"`
		Consent            *adsConsent         `json:"consent,omitempty"`
	}
	adsUserIdentifier struct {
		UserIdentifierSource string `json:"userIdentifierSource,omitempty"`
		HashedEmail          string `json:"hashedEmail,omitempty"`
		HashedPhoneNumber    string `json:"hashedPhoneNumber,omitempty"`
	}
	adsConsent struct {
		AdUserData string `json:"adUserData"`
	}
	adsAdjustmentRequest struct {
		ConversionAdjustments []adsAdjustment `json:"conversionAdjustments"`
		PartialFailure        bool            `json:"partialFailure"`
		ValidateOnly          bool            `json:"validateOnly,omitempty"`
	}
	adsAdjustment struct {
		OrderID            string               `json:"orderId"`
		ConversionAction   string               `json:"conversionAction"`
		AdjustmentType     string               `json:"adjustmentType"`
		AdjustmentDateTime string               `json:"adjustmentDateTime"`
		RestatementValue   *adsRestatementValue `json:"restatementValue,omitempty"`
	}
	// adsRestatementValue is the new total value (100 → 70 sends 70).
	adsRestatementValue struct {
		AdjustedValue float64 `json:"adjustedValue"`
		CurrencyCode  string  `json:"currencyCode,omitempty"`
	}
)

func (a *AdsAPI) actionName(id string) string {
	return "customers/" + a.set.CustomerID + "/conversionActions/" + id
}

// BuildRequest builds `POST {base}/{ver}/customers/{cid}:uploadClickConversions` for
// conversions or `:uploadConversionAdjustments` (RETRACTION or RESTATEMENT by orderId) for
// adjustments. A batch mixing both is an error (see BatchGroup).
func (a *AdsAPI) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	method, body, err := a.body(batch)
	if err != nil {
		return nil, err
	}
	token, err := a.tokens.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s/%s/customers/%s:%s", strings.TrimRight(a.cfg.BaseURL, "/"), a.cfg.APIVersion, a.set.CustomerID, method)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if a.set.LoginCustomerID != "" {
		req.Header.Set("login-customer-id", a.set.LoginCustomerID)
	}
	return req, nil
}

// Body returns the method name and exact JSON body BuildRequest sends; no credentials needed.
func (a *AdsAPI) Body(batch []store.Conversion) (method string, body []byte, err error) {
	return a.body(batch)
}

func (a *AdsAPI) body(batch []store.Conversion) (string, []byte, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return "", nil, fmt.Errorf("google ads: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	group := a.BatchGroup(&batch[0])
	for i := range batch {
		if a.BatchGroup(&batch[i]) != group {
			return "", nil, fmt.Errorf("google ads: batch mixes conversions and adjustments (row %d)", i)
		}
	}
	if group == adjustmentGroup {
		req := adsAdjustmentRequest{PartialFailure: true, ValidateOnly: a.set.ValidateOnly}
		for i := range batch {
			c := &batch[i]
			adj := adsAdjustment{
				OrderID:            c.RetractsKey,
				ConversionAction:   a.actionName(c.ConversionName),
				AdjustmentType:     "RETRACTION",
				AdjustmentDateTime: c.OccurredAt.UTC().Format(AdsDateTime),
			}
			if c.Kind == store.KindRestatement {
				if c.Value == nil {
					return "", nil, fmt.Errorf("google ads: row %d is a restatement without a value; Check rejects those", i)
				}
				adj.AdjustmentType = "RESTATEMENT"
				adj.RestatementValue = &adsRestatementValue{AdjustedValue: *c.Value, CurrencyCode: c.Currency}
			}
			req.ConversionAdjustments = append(req.ConversionAdjustments, adj)
		}
		b, err := json.Marshal(req)
		return "uploadConversionAdjustments", b, err
	}
	req := adsClickRequest{PartialFailure: true, ValidateOnly: a.set.ValidateOnly}
	for i := range batch {
		c := &batch[i]
		cc := adsClickConversion{
			ConversionAction:   a.actionName(c.ConversionName),
			ConversionDateTime: c.OccurredAt.UTC().Format(AdsDateTime),
			OrderID:            c.Key,
		}
		if click, ok := pickClick(c.Identity.Clicks); ok {
			switch click.Type {
			case "gclid":
				cc.Gclid = click.ID
			case "gbraid":
				cc.Gbraid = click.ID
			case "wbraid":
				cc.Wbraid = click.ID
			}
		}
		ids := c.Identity.Identifiers
		if h := ids.Get(pii.KeyEmailCanonical); h != "" {
			cc.UserIdentifiers = append(cc.UserIdentifiers, adsUserIdentifier{UserIdentifierSource: "FIRST_PARTY", HashedEmail: h})
		}
		if h := ids.Get(pii.KeyPhoneE164); h != "" {
			cc.UserIdentifiers = append(cc.UserIdentifiers, adsUserIdentifier{UserIdentifierSource: "FIRST_PARTY", HashedPhoneNumber: h})
		}
		if len(cc.UserIdentifiers) > MaxAdsUserIdentifiers {
			cc.UserIdentifiers = cc.UserIdentifiers[:MaxAdsUserIdentifiers]
		}
		switch c.Identity.Consent.AdUserData {
		case store.ConsentGranted:
			cc.Consent = &adsConsent{AdUserData: "GRANTED"}
		case store.ConsentDenied:
			cc.Consent = &adsConsent{AdUserData: "DENIED"}
		}
		if c.Value != nil {
			v := *c.Value
			cc.ConversionValue = &v
			cc.CurrencyCode = c.Currency
		}
		req.Conversions = append(req.Conversions, cc)
	}
	b, err := json.Marshal(req)
	return "uploadClickConversions", b, err
}

// adsSetupReasons are Ads API 400 reasons that no row split can fix.
var adsSetupReasons = map[string]bool{
	"CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE": true,
	"NOT_ALLOWLISTED":   true,
	"PERMISSION_DENIED": true,
}

// ParseResponse: 200 → one result per row; rows named by partialFailureError (by index)
// get their error's class (AdsErrorClass), the others are accepted. Request-level errors:
// 401 → refresh or setup; authentication/authorization/allowlist errors → *SetupError;
// quota: RESOURCE_EXHAUSTED → *SetupError, RESOURCE_TEMPORARILY_EXHAUSTED/429/5xx →
// *TransientError; other 400s → *BatchRejectedError.
func (a *AdsAPI) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	if resp.StatusCode/100 != 2 {
		p := parseGoogleError(body)
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, unauthorized(a.tokens, p)
		}
		for _, e := range p.adsErrors {
			typ, enum := e.code()
			class, _ := AdsErrorClass(typ, enum)
			if class == uploader.ClassSetup {
				return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: enum, Detail: uploader.Truncate(e.Message, 300)}
			}
			if class == uploader.ClassHeld && len(batch) == 1 {
				// A larger batch is bisected below until the action's rows stand alone.
				return nil, &uploader.Error{Class: uploader.ClassHeld, Reason: enum, Detail: uploader.Truncate(e.Message, 300)}
			}
			if typ == "quotaError" {
				ra := retryAfter(resp.Header, time.Now())
				if ra == 0 {
					ra = p.retryDelay
				}
				return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: enum, Detail: uploader.Truncate(e.Message, 300), RetryAfter: ra}
			}
		}
		if len(p.adsErrors) > 0 && resp.StatusCode == http.StatusBadRequest {
			_, enum := p.adsErrors[0].code()
			return nil, &uploader.Error{Class: uploader.ClassBatchRejected, Reason: enum, Detail: uploader.Truncate(p.adsErrors[0].Message, 300)}
		}
		return nil, classifyHTTP(resp, p, adsSetupReasons)
	}
	var ok struct {
		PartialFailureError *rpcStatus `json:"partialFailureError"`
	}
	if err := json.Unmarshal(body, &ok); err != nil {
		return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "unparseable_response", Detail: "upload answered 2xx with a body that is not JSON"}
	}
	accepted := uploader.RowResult{Class: uploader.ClassAccepted, Reason: "uploaded"}
	if a.set.ValidateOnly {
		accepted = uploader.RowResult{Class: uploader.ClassAccepted, Reason: "validate_only", Detail: "validated, not uploaded"}
	}
	results := uploader.AllRows(len(batch), accepted)
	if ok.PartialFailureError == nil || (ok.PartialFailureError.Code == 0 && len(ok.PartialFailureError.Details) == 0) {
		return results, nil
	}
	raw, _ := json.Marshal(map[string]any{"error": ok.PartialFailureError})
	p := parseGoogleError(raw)
	named := make([]bool, len(batch))
	for _, e := range p.adsErrors {
		typ, enum := e.code()
		class, wait := AdsErrorClass(typ, enum)
		i, has := e.index()
		if !has {
			if class == uploader.ClassSetup {
				return nil, &uploader.Error{Class: uploader.ClassSetup, Reason: enum, Detail: uploader.Truncate(e.Message, 300)}
			}
			continue
		}
		if i < 0 || i >= len(batch) || named[i] {
			continue // first error per row wins
		}
		named[i] = true
		results[i] = uploader.RowResult{Class: class, Reason: enum, Detail: uploader.Truncate(e.Message, 300), RetryAfter: wait}
	}
	return results, nil
}

// adsClasses maps Google Ads error enums (ConversionUploadError and
// ConversionAdjustmentUploadError, v24/v25; platforms.md 1.5) to the class of the row that
// got them. Already-done enums are ClassAccepted: the platform holds what we sent.
var adsClasses = map[string]struct {
	class uploader.Class
	wait  time.Duration
}{
	// Retry later.
	"TOO_RECENT_EVENT":             {uploader.ClassTransient, 6 * time.Hour},
	"TOO_RECENT_CONVERSION_ACTION": {uploader.ClassTransient, 6 * time.Hour},
	"TOO_RECENT_CALL":              {uploader.ClassTransient, 12 * time.Hour},
	"TOO_RECENT_CONVERSION":        {uploader.ClassTransient, 24 * time.Hour},
	"CONCURRENT_MODIFICATION":      {uploader.ClassTransient, 0},
	"INTERNAL_ERROR":               {uploader.ClassTransient, 0},
	"TRANSIENT_ERROR":              {uploader.ClassTransient, 0},
	// Permanent for the row.
	"UNPARSEABLE_GCLID":                          {uploader.ClassPermanent, 0},
	"UNPARSEABLE_GBRAID":                         {uploader.ClassPermanent, 0},
	"UNPARSEABLE_WBRAID":                         {uploader.ClassPermanent, 0},
	"GBRAID_WBRAID_BOTH_SET":                     {uploader.ClassPermanent, 0},
	"EXPIRED_EVENT":                              {uploader.ClassPermanent, 0},
	"CONVERSION_PRECEDES_EVENT":                  {uploader.ClassPermanent, 0},
	"EVENT_NOT_FOUND":                            {uploader.ClassPermanent, 0},
	"CLICK_NOT_FOUND":                            {uploader.ClassPermanent, 0},
	"INVALID_CUSTOMER_FOR_CLICK":                 {uploader.ClassPermanent, 0},
	"INVALID_USER_IDENTIFIER":                    {uploader.ClassPermanent, 0},
	"UNSUPPORTED_USER_IDENTIFIER":                {uploader.ClassPermanent, 0},
	"ORDER_ID_CONTAINS_PII":                      {uploader.ClassPermanent, 0},
	"CUSTOM_VARIABLE_VALUE_CONTAINS_PII":         {uploader.ClassPermanent, 0},
	"DUPLICATE_ORDER_ID":                         {uploader.ClassPermanent, 0},
	"DUPLICATE_CLICK_CONVERSION_IN_REQUEST":      {uploader.ClassPermanent, 0},
	"INVALID_JOB_ID":                             {uploader.ClassPermanent, 0},
	"CONVERSION_NOT_FOUND":                       {uploader.ClassPermanent, 0},
	"CONVERSION_EXPIRED":                         {uploader.ClassPermanent, 0},
	"ADJUSTMENT_PRECEDES_CONVERSION":             {uploader.ClassPermanent, 0},
	"TOO_MANY_ADJUSTMENTS":                       {uploader.ClassPermanent, 0},
	"GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET": {uploader.ClassPermanent, 0},
	"MISSING_ORDER_ID_FOR_WEBPAGE":               {uploader.ClassPermanent, 0},
	"DUPLICATE_ADJUSTMENT_IN_REQUEST":            {uploader.ClassPermanent, 0},
	"DUPLICATE_ENHANCEMENT_IN_REQUEST":           {uploader.ClassPermanent, 0},
	"CANNOT_RESTATE_CONVERSION_ACTION_THAT_ALWAYS_USES_DEFAULT_CONVERSION_VALUE": {uploader.ClassPermanent, 0},
	"INVALID_FIELD_VALUES_IN_DATE_TIME":                                          {uploader.ClassPermanent, 0},
	// Already done: the platform has it.
	"CLICK_CONVERSION_ALREADY_EXISTS": {uploader.ClassAccepted, 0},
	"ORDER_ID_ALREADY_IN_USE":         {uploader.ClassAccepted, 0},
	"CONVERSION_ALREADY_RETRACTED":    {uploader.ClassAccepted, 0},
	"RESTATEMENT_ALREADY_EXISTS":      {uploader.ClassAccepted, 0},
	"CONVERSION_ALREADY_ENHANCED":     {uploader.ClassAccepted, 0},
	"MORE_RECENT_RESTATEMENT_FOUND":   {uploader.ClassAccepted, 0},
	// Account or conversion action setup.
	// Scoped to the row's conversion action: hold that action's rows, the others flow.
	"NO_CONVERSION_ACTION_FOUND":     {uploader.ClassHeld, 0},
	"INVALID_CONVERSION_ACTION_TYPE": {uploader.ClassHeld, 0},
	"EXTERNAL_ATTRIBUTION_DATA_SET_FOR_NON_EXTERNALLY_ATTRIBUTED_CONVERSION_ACTION": {uploader.ClassHeld, 0},
	"EXTERNAL_ATTRIBUTION_DATA_NOT_SET_FOR_EXTERNALLY_ATTRIBUTED_CONVERSION_ACTION": {uploader.ClassHeld, 0},

	"CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS":           {uploader.ClassSetup, 0},
	"CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS": {uploader.ClassSetup, 0},
	"CUSTOMER_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS": {uploader.ClassSetup, 0},
	"CONVERSION_TRACKING_NOT_ENABLED_AT_IMPRESSION_TIME":  {uploader.ClassSetup, 0},
	"UNAUTHORIZED_CUSTOMER":                               {uploader.ClassSetup, 0},
	"CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE":           {uploader.ClassSetup, 0},
	"RESOURCE_EXHAUSTED":                                  {uploader.ClassSetup, 0}, // quotaError: daily operations used up
	"RESOURCE_TEMPORARILY_EXHAUSTED":                      {uploader.ClassTransient, time.Minute},
}

// AdsErrorClass classifies one GoogleAdsError by its error type (the errorCode key, e.g.
// "conversionUploadError") and enum name. Authentication and authorization errors are
// setup; conversion-action errors hold that action's rows; an enum this package does not
// know is ClassUnknown (the row is retried, never rejected).
func AdsErrorClass(errorType, enum string) (uploader.Class, time.Duration) {
	switch errorType {
	case "authenticationError", "authorizationError", "notAllowlistedError":
		return uploader.ClassSetup, 0
	case "internalError", "databaseError":
		if c, ok := adsClasses[enum]; ok {
			return c.class, c.wait
		}
		return uploader.ClassTransient, 0
	}
	if c, ok := adsClasses[enum]; ok {
		return c.class, c.wait
	}
	return uploader.ClassUnknown, 0
}
