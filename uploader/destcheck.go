package uploader

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// Tester is implemented by platforms that can say, before real conversions flow, whether a
// destination will work (`closedloop destinations test`). Test runs its checks in order —
// credentials, account (dataset, event source), each conversion the mappings use, the API
// version, and with SendTestEvent one test conversion through the platform's test mode —
// and returns one CheckResult per check, in that order. A check that cannot run because an
// earlier one failed is CheckSkipped, saying which. Test never returns a secret or raw PII
// in a result; it sends nothing that counts as a real conversion.
type Tester interface {
	Test(ctx context.Context, req TestRequest) []CheckResult
}

// TestRequest is what a Tester checks.
type TestRequest struct {
	// Conversions are the conversion names (action ids, event names) the mappings send to
	// this destination, deduplicated, in mapping order.
	Conversions []string
	// SendTestEvent asks for one test conversion through the platform's test mode.
	SendTestEvent bool
	// Now dates the version check and the test event; zero means time.Now.
	Now time.Time
	// Client makes the API calls (the token endpoint uses the platform's own); nil means a
	// client with the destination's timeout.
	Client *http.Client
}

// CheckStatus is the outcome of one check.
type CheckStatus string

const (
	CheckOK      CheckStatus = "ok"
	CheckFailed  CheckStatus = "failed"
	CheckWarning CheckStatus = "warning" // works now, needs attention (a version near its sunset)
	CheckSkipped CheckStatus = "skipped" // not run: an earlier check failed, or nothing to check
	CheckNone    CheckStatus = "n/a"     // the platform has no way to check this; Detail says so
)

// Check names, in the order a Tester runs them.
const (
	CheckCredentials = "credentials"
	CheckAccount     = "account"
	CheckConversion  = "conversion"
	CheckAPIVersion  = "api_version"
	CheckTestEvent   = "test_event"
)

// CheckResult is one line of `destinations test`.
type CheckResult struct {
	Check  string      `json:"check"`            // one of the Check* names
	Target string      `json:"target,omitempty"` // what was checked: an account id, a conversion action id, an event name
	Status CheckStatus `json:"status"`
	// Detail says what is wrong (or what was found), in the platform's own words where it
	// gave any; never a secret or raw PII.
	Detail string `json:"detail,omitempty"`
	Reason string `json:"reason,omitempty"` // the platform's error code or enum, when it gave one
}

// Failed reports whether r is a failure (exit 1).
func (r CheckResult) Failed() bool { return r.Status == CheckFailed }

// ResultOf turns an error into a failed result for check on target; a *Error keeps its
// reason and detail.
func ResultOf(check, target string, err error) CheckResult {
	e := AsError(err)
	return CheckResult{Check: check, Target: target, Status: CheckFailed, Reason: e.Reason, Detail: e.Detail}
}

// VersionCheck is the api_version check every Tester runs: the spec's VersionWarning at now
// with warnFor (the run's SunsetWarnFor).
func VersionCheck(spec Spec, version string, now time.Time, warnFor time.Duration) CheckResult {
	r := CheckResult{Check: CheckAPIVersion, Target: version, Status: CheckOK}
	if len(spec.Versions) == 0 {
		r.Status, r.Detail = CheckNone, spec.API+" has no version to choose"
		return r
	}
	msg, refuse := spec.VersionWarning(version, now, warnFor)
	switch {
	case refuse:
		r.Status, r.Detail = CheckFailed, msg
	case msg != "":
		r.Status, r.Detail = CheckWarning, msg
	default:
		if v, _ := spec.Version(version); !v.Sunset.IsZero() {
			r.Detail = "sunsets " + v.Sunset.Format("2006-01-02")
		} else {
			r.Detail = "no sunset announced"
		}
	}
	return r
}

// SunsetWarnFor is how long before an API version's sunset `destinations test` warns.
const SunsetWarnFor = 30 * 24 * time.Hour

// Rest is what follows a failed check: the account check (when account is not "") and one
// conversion check per req.Conversions skipped for why, the version check (it needs no
// network), and the test event, when asked, skipped too.
func Rest(req TestRequest, why, account string, version CheckResult) []CheckResult {
	var out []CheckResult
	if account != "" {
		out = append(out, CheckResult{Check: CheckAccount, Target: account, Status: CheckSkipped, Detail: why})
	}
	for _, c := range req.Conversions {
		out = append(out, CheckResult{Check: CheckConversion, Target: c, Status: CheckSkipped, Detail: why})
	}
	out = append(out, version)
	if req.SendTestEvent {
		out = append(out, CheckResult{Check: CheckTestEvent, Status: CheckSkipped, Detail: why})
	}
	return out
}

// NameResolver is implemented by platforms that can turn a conversion name as sales ops
// write it in a mapping (`conversion: {name: "Closed Won (CRM)"}`) into the id they upload
// to. An unknown or ambiguous name is an error naming every candidate (id and owner).
type NameResolver interface {
	ResolveConversion(ctx context.Context, name string) (id string, err error)
}

// testEmail is the address test conversions carry (hashed per the platform's rules): a
// reserved example.com address, no one's.
const testEmail = "closedloop-test@example.com"

// TestConversion returns the one conversion a Tester sends through its platform's test mode:
// named name, keyed so that it never equals a real conversion key, an hour old at now, with
// a value of 1 USD and only a hashed example address as identifier.
func TestConversion(name string, now time.Time) store.Conversion {
	ids := pii.Set{}
	_ = pii.Normalizer{DefaultRegion: "US"}.Add(ids, pii.Email, testEmail) // a fixed valid address
	v := 1.0
	return store.Conversion{
		Key:            fmt.Sprintf("closedloop-test-%d", now.Unix()),
		Kind:           store.KindConversion,
		ConversionName: name,
		OccurredAt:     now.Add(-time.Hour).UTC().Truncate(time.Second),
		Value:          &v,
		Currency:       "USD",
		Identity:       store.Identity{Identifiers: ids, Consent: store.Consent{AdUserData: store.ConsentGranted}},
	}
}

// SendTest builds the request for batch with p, sends it with client and returns p's
// reading of the answer: the first row's result, or the request-level error.
func SendTest(ctx context.Context, p Platform, client *http.Client, batch []store.Conversion, now time.Time) (RowResult, error) {
	if e := p.Check(&batch[0], now); e != nil {
		return RowResult{}, e
	}
	req, err := p.BuildRequest(ctx, batch, now)
	if err != nil {
		return RowResult{}, err
	}
	body, resp, err := Do(client, req)
	if err != nil {
		return RowResult{}, err
	}
	rows, err := p.ParseResponse(resp, body, batch)
	if err != nil {
		return RowResult{}, err
	}
	if len(rows) == 0 {
		return RowResult{}, &Error{Class: ClassUnknown, Reason: "no_rows", Detail: "the answer named no row"}
	}
	return rows[0], nil
}

// Do sends req once and reads at most maxResponseBody of the answer. A transport error
// is a ClassTransient *Error naming the operation, never the URL's query.
func Do(client *http.Client, req *http.Request) ([]byte, *http.Response, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, &Error{Class: ClassTransient, Reason: "unreachable", Detail: redact(errText(err))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, nil, &Error{Class: ClassTransient, Reason: "unreadable_response", Detail: err.Error()}
	}
	return body, resp, nil
}

// TestClient returns client, or a plain client with timeout when it is nil.
func TestClient(client *http.Client, timeout time.Duration) *http.Client {
	if client != nil {
		return client
	}
	return &http.Client{Timeout: timeout}
}
