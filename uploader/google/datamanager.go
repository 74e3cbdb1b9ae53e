package google

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// MaxDestinations is the most destinations (conversion actions) one ingest request may name.
const MaxDestinations = 10

// MaxUserIdentifiers is the most user identifiers one Data Manager event may carry.
const MaxUserIdentifiers = 10

// dmSetupReasons are Data Manager 400 reasons that no row split can fix.
var dmSetupReasons = map[string]bool{
	"INVALID_DESTINATION":    true,
	"TOO_MANY_DESTINATIONS":  true,
	"PERMISSION_DENIED":      true,
	"DESTINATION_NOT_FOUND":  true,
	"INVALID_LOGIN_ACCOUNT":  true,
	"INVALID_OPERATING_ACCT": true,
}

// DataManager uploads to the Data Manager API (platform "google"). It implements
// uploader.Platform, uploader.StatusPoller and uploader.Grouper. Safe for concurrent use.
type DataManager struct {
	cfg    uploader.DestinationConfig
	set    *Settings
	tokens *tokens
	log    *zap.Logger
}

var (
	_ uploader.Platform     = (*DataManager)(nil)
	_ uploader.StatusPoller = (*DataManager)(nil)
	_ uploader.Grouper      = (*DataManager)(nil)
)

// NewDataManager returns the Data Manager platform for one destination. cfg gets its
// defaults applied; it should have passed Validate. client is used for the token endpoint
// (nil = a client with cfg.Timeout).
func NewDataManager(cfg uploader.DestinationConfig, client *http.Client, log *zap.Logger) *DataManager {
	cfg = cfg.WithDefaults(DataManagerSpec())
	set, client := settingsOf(cfg, client)
	return &DataManager{cfg: cfg, set: set, tokens: newTokens(set, ScopeDataManager, client, log), log: log}
}

// MaxBatch is 2,000 events per request.
func (d *DataManager) MaxBatch() int { return min(d.cfg.BatchSize, MaxBatch) }

// BatchGroup keeps rows of one conversion action together, so that a request names one
// destination (BuildRequest also handles up to 10).
func (d *DataManager) BatchGroup(c *store.Conversion) string { return c.ConversionName }

// Check applies Google's rules: no retractions (Data Manager has none), consent, a numeric
// conversion action, a click ID or hashed email/phone, and the click window measured from
// click to conversion (expired beyond it; transient while the click is under 6 h old). A
// restatement needs a value and currency: Data Manager takes it as the original event
// sent again under the same transactionId with the new value (platforms.md §1.6, "treated
// as an adjustment"), built from store.Conversion.Adjusted.
func (d *DataManager) Check(c *store.Conversion, now time.Time) *uploader.Error {
	switch c.Kind {
	case store.KindRetraction:
		return &uploader.Error{Class: uploader.ClassSkipped, Reason: store.ReasonRetractionUnsupported,
			Detail: "the Data Manager API cannot retract a conversion"}
	case store.KindRestatement:
		if e := checkRestatement(c); e != nil {
			return e
		}
		if !numericID.MatchString(c.ConversionName) {
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "invalid_conversion_action",
				Detail: fmt.Sprintf("conversion name must be the numeric conversion action ID, got %q", c.ConversionName)}
		}
		if c.RetractsKey == "" {
			return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_retracts_key", Detail: "a restatement must name the conversion it restates"}
		}
		return nil
	}
	return checkConversion(c, now, d.set.ClickWindow)
}

// Request body types (google_datamanager_v1.json: IngestEventsRequest).
type (
	dmRequest struct {
		Destinations []dmDestination `json:"destinations"`
		Encoding     string          `json:"encoding,omitempty"`
		ValidateOnly bool            `json:"validateOnly,omitempty"`
		Events       []dmEvent       `json:"events"`
	}
	dmAccount struct {
		AccountType string `json:"accountType"`
		AccountID   string `json:"accountId"`
	}
	dmDestination struct {
		Reference            string     `json:"reference,omitempty"`
		LoginAccount         *dmAccount `json:"loginAccount,omitempty"`
		OperatingAccount     dmAccount  `json:"operatingAccount"`
		ProductDestinationID string     `json:"productDestinationId"`
	}
	dmEvent struct {
		DestinationReferences []string         `json:"destinationReferences,omitempty"`
		TransactionID         string           `json:"transactionId"`
		EventTimestamp        string           `json:"eventTimestamp"`
		AdIdentifiers         *dmAdIdentifiers `json:"adIdentifiers,omitempty"`
		UserData              *dmUserData      `json:"userData,omitempty"`
		Consent               *dmConsent       `json:"consent,omitempty"`
		ConversionValue       *float64         `json:"conversionValue,omitempty"`
		Currency              string           `json:"currency,omitempty"`
		EventSource           string           `json:"eventSource"`
	}
	dmAdIdentifiers struct {
		Gclid  string `json:"gclid,omitempty"`
		Gbraid string `json:"gbraid,omitempty"`
		Wbraid string `json:"wbraid,omitempty"`
	}
	dmUserData struct {
		UserIdentifiers []dmUserIdentifier `json:"userIdentifiers"`
	}
	dmUserIdentifier struct {
		EmailAddress string `json:"emailAddress,omitempty"`
		PhoneNumber  string `json:"phoneNumber,omitempty"`
	}
	dmConsent struct {
		AdUserData        string `json:"adUserData,omitempty"`
		AdPersonalization string `json:"adPersonalization,omitempty"`
	}
)

// dmConsentStatus maps a captured consent answer; unknown is omitted.
func dmConsentStatus(v string) string {
	switch v {
	case store.ConsentGranted:
		return "CONSENT_GRANTED"
	case store.ConsentDenied:
		return "CONSENT_DENIED"
	}
	return ""
}

// BuildRequest builds `POST {base}/v1/events:ingest` for rows that passed Check.
func (d *DataManager) BuildRequest(ctx context.Context, batch []store.Conversion, _ time.Time) (*http.Request, error) {
	if len(batch) == 0 || len(batch) > MaxBatch {
		return nil, fmt.Errorf("google data manager: batch of %d rows, want 1..%d", len(batch), MaxBatch)
	}
	body, err := d.body(batch)
	if err != nil {
		return nil, err
	}
	token, err := d.tokens.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(d.cfg.BaseURL, "/")+"/v1/events:ingest", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

// Body returns the exact JSON body BuildRequest sends (for `mappings explain`). It needs
// no credentials.
func (d *DataManager) Body(batch []store.Conversion) ([]byte, error) { return d.body(batch) }

func (d *DataManager) body(batch []store.Conversion) ([]byte, error) {
	actions := []string{}
	seen := map[string]bool{}
	for i := range batch {
		if !seen[batch[i].ConversionName] {
			seen[batch[i].ConversionName] = true
			actions = append(actions, batch[i].ConversionName)
		}
	}
	if len(actions) > MaxDestinations {
		return nil, fmt.Errorf("google data manager: batch names %d conversion actions, at most %d fit one request", len(actions), MaxDestinations)
	}
	sort.Strings(actions)
	multi := len(actions) > 1
	req := dmRequest{Encoding: "HEX", ValidateOnly: d.set.ValidateOnly, Events: make([]dmEvent, 0, len(batch))}
	for _, a := range actions {
		dst := dmDestination{
			OperatingAccount:     dmAccount{AccountType: "GOOGLE_ADS", AccountID: d.set.CustomerID},
			ProductDestinationID: a,
		}
		if d.set.LoginCustomerID != "" {
			dst.LoginAccount = &dmAccount{AccountType: "GOOGLE_ADS", AccountID: d.set.LoginCustomerID}
		}
		if multi {
			dst.Reference = "action-" + a
		}
		req.Destinations = append(req.Destinations, dst)
	}
	hasUserData := false
	for i := range batch {
		c := &batch[i]
		if c.Kind == store.KindRetraction {
			return nil, fmt.Errorf("google data manager: row %d is a retraction; Check skips those", i)
		}
		if c.Kind == store.KindRestatement {
			// The original event again, under its transactionId, with the new value.
			if c.Adjusted == nil {
				return nil, fmt.Errorf("google data manager: restatement row %d carries no Adjusted conversion (the dispatcher sets it)", i)
			}
			r := *c.Adjusted
			r.Value, r.Currency, r.ConversionName = c.Value, c.Currency, c.ConversionName
			c = &r
		}
		ev := dmEvent{
			TransactionID:  c.Key,
			EventTimestamp: c.OccurredAt.UTC().Format(time.RFC3339),
			EventSource:    "OTHER",
		}
		if multi {
			ev.DestinationReferences = []string{"action-" + c.ConversionName}
		}
		if click, ok := pickClick(c.Identity.Clicks); ok {
			ev.AdIdentifiers = &dmAdIdentifiers{}
			switch click.Type {
			case "gclid":
				ev.AdIdentifiers.Gclid = click.ID
			case "gbraid":
				ev.AdIdentifiers.Gbraid = click.ID
			case "wbraid":
				ev.AdIdentifiers.Wbraid = click.ID
			}
		}
		ids := c.Identity.Identifiers
		var uids []dmUserIdentifier
		if h := ids.Get(pii.KeyEmailCanonical); h != "" {
			uids = append(uids, dmUserIdentifier{EmailAddress: h})
		}
		if h := ids.Get(pii.KeyPhoneE164); h != "" {
			uids = append(uids, dmUserIdentifier{PhoneNumber: h})
		}
		if len(uids) > MaxUserIdentifiers {
			uids = uids[:MaxUserIdentifiers]
		}
		if len(uids) > 0 {
			ev.UserData = &dmUserData{UserIdentifiers: uids}
			hasUserData = true
		}
		cons := dmConsent{
			AdUserData:        dmConsentStatus(c.Identity.Consent.AdUserData),
			AdPersonalization: dmConsentStatus(c.Identity.Consent.AdPersonalization),
		}
		if cons != (dmConsent{}) {
			ev.Consent = &cons
		}
		if c.Value != nil {
			v := *c.Value
			ev.ConversionValue = &v
			ev.Currency = c.Currency
		}
		req.Events = append(req.Events, ev)
	}
	if !hasUserData {
		req.Encoding = ""
	}
	return json.Marshal(req)
}

// ParseResponse: 200 with a requestId → every row ClassSent with that ref (ClassAccepted
// "validate_only" in validate-only mode); 400 → *BatchRejectedError (Data Manager fails the
// whole request and does not name rows reliably) unless the reason is about the
// destination (*SetupError); 401 → refresh the token (*TransientError) or *SetupError;
// 403/404 → *SetupError; 429/5xx → *TransientError.
func (d *DataManager) ParseResponse(resp *http.Response, body []byte, batch []store.Conversion) ([]uploader.RowResult, error) {
	if resp.StatusCode/100 == 2 {
		var ok struct {
			RequestID string `json:"requestId"`
		}
		if err := json.Unmarshal(body, &ok); err != nil {
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "unparseable_response", Detail: "ingest answered 2xx with a body that is not JSON"}
		}
		if d.set.ValidateOnly {
			return uploader.AllRows(len(batch), uploader.RowResult{Class: uploader.ClassAccepted, Reason: "validate_only", Detail: "validated, not ingested"}), nil
		}
		if ok.RequestID == "" {
			return nil, &uploader.Error{Class: uploader.ClassTransient, Reason: "missing_request_id", Detail: "ingest answered 2xx without a requestId"}
		}
		return uploader.AllRows(len(batch), uploader.RowResult{Class: uploader.ClassSent, Reason: "ingested", PlatformRef: ok.RequestID}), nil
	}
	p := parseGoogleError(body)
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, unauthorized(d.tokens, p)
	}
	return nil, classifyHTTP(resp, p, dmSetupReasons)
}

// PollRequest builds `GET {base}/v1/requestStatus:retrieve?requestId=ref`.
func (d *DataManager) PollRequest(ctx context.Context, ref string) (*http.Request, error) {
	if ref == "" {
		return nil, errors.New("google data manager: empty requestId to poll")
	}
	token, err := d.tokens.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(d.cfg.BaseURL, "/") + "/v1/requestStatus:retrieve?" + url.Values{"requestId": {ref}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

// Response types (RetrieveRequestStatusResponse).
type (
	dmStatusResponse struct {
		RequestStatusPerDestination []dmDestinationStatus `json:"requestStatusPerDestination"`
	}
	dmDestinationStatus struct {
		Destination   dmDestination `json:"destination"`
		RequestStatus string        `json:"requestStatus"`
		ErrorInfo     struct {
			ErrorCounts []dmCount `json:"errorCounts"`
		} `json:"errorInfo"`
		WarningInfo struct {
			WarningCounts []dmCount `json:"warningCounts"`
		} `json:"warningInfo"`
		EventsIngestionStatus *struct {
			RecordCount json.Number `json:"recordCount"`
		} `json:"eventsIngestionStatus"`
	}
	dmCount struct {
		RecordCount json.Number `json:"recordCount"`
		Reason      string      `json:"reason"`
	}
)

// ParsePoll maps each destination's status onto its rows: PROCESSING (or unknown) → not
// done; SUCCESS → accepted; FAILED → rejected with the dominant processing error reason
// (transient when that reason is an internal error). PARTIAL_SUCCESS reports only counts, not
// which rows failed: when every row failed they are rejected, otherwise all are recorded
// partial (store.StatePartial) with Reason "partial_success" and "N of M failed per the
// platform: reason=count, ..." in Detail.
func (d *DataManager) ParsePoll(resp *http.Response, body []byte, rows []store.Conversion) ([]uploader.RowResult, bool, error) {
	if resp.StatusCode/100 != 2 {
		p := parseGoogleError(body)
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, false, unauthorized(d.tokens, p)
		}
		if resp.StatusCode == http.StatusNotFound {
			return nil, false, &uploader.Error{Class: uploader.ClassTransient, Reason: p.reason, Detail: "request status not found yet: " + p.detail()}
		}
		return nil, false, classifyHTTP(resp, p, dmSetupReasons)
	}
	var st dmStatusResponse
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, false, &uploader.Error{Class: uploader.ClassTransient, Reason: "unparseable_response", Detail: "requestStatus answered 2xx with a body that is not JSON"}
	}
	byAction := map[string]dmDestinationStatus{}
	for _, s := range st.RequestStatusPerDestination {
		byAction[s.Destination.ProductDestinationID] = s
	}
	rowsOf := map[string]int{}
	for i := range rows {
		rowsOf[rows[i].ConversionName]++
	}
	results := make([]uploader.RowResult, len(rows))
	for i := range rows {
		s, ok := byAction[rows[i].ConversionName]
		if !ok && len(st.RequestStatusPerDestination) == 1 {
			s, ok = st.RequestStatusPerDestination[0], true
		}
		if !ok {
			return nil, false, nil // this destination has no status yet
		}
		switch s.RequestStatus {
		case "SUCCESS":
			results[i] = uploader.RowResult{Class: uploader.ClassAccepted, Reason: "SUCCESS"}
		case "FAILED":
			results[i] = failedResult(s.ErrorInfo.ErrorCounts)
		case "PARTIAL_SUCCESS":
			failed := 0
			for _, c := range s.ErrorInfo.ErrorCounts {
				n, _ := strconv.Atoi(c.RecordCount.String())
				failed += n
			}
			if failed >= rowsOf[rows[i].ConversionName] {
				results[i] = failedResult(s.ErrorInfo.ErrorCounts)
			} else {
				// The status counts failed records without naming them: none of these rows
				// may be counted as plainly accepted.
				// The reason is the request's own tally, so the report groups by request.
				tally := fmt.Sprintf("%d of %d failed per the platform: %s", failed, rowsOf[rows[i].ConversionName], countsDetail(s.ErrorInfo.ErrorCounts))
				results[i] = uploader.RowResult{Class: uploader.ClassPartial, Reason: tally, Detail: "PARTIAL_SUCCESS: " + tally}
			}
		default: // PROCESSING, REQUEST_STATUS_UNKNOWN
			return nil, false, nil
		}
	}
	return results, true, nil
}

func failedResult(counts []dmCount) uploader.RowResult {
	reason, best := "FAILED", -1
	for _, c := range counts {
		n, _ := strconv.Atoi(c.RecordCount.String())
		if n > best {
			reason, best = c.Reason, n
		}
	}
	class := uploader.ClassPermanent
	if reason == "PROCESSING_ERROR_REASON_INTERNAL_ERROR" {
		class = uploader.ClassTransient
	}
	return uploader.RowResult{Class: class, Reason: reason, Detail: countsDetail(counts)}
}

func countsDetail(counts []dmCount) string {
	parts := make([]string, 0, len(counts))
	for _, c := range counts {
		parts = append(parts, c.Reason+"="+c.RecordCount.String())
	}
	return strings.Join(parts, ", ")
}
