package tiktok

import (
	"context"
	"strings"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

var _ uploader.Tester = (*Platform)(nil)

// Test: the TikTok Events API has no read-only endpoint reachable with a destination's keys
// (listing CRM event sets, /crm/list/, needs an advertiser id the destination does not have)
// and no validate-only mode, so the access token and event set are only checked by a test
// event: with SendTestEvent and a test_event_code, one event is sent with it and its answer
// is the credentials and event set checks (40105 expired token, 40002 event_source_id ...).
// Event names are free-form (any standard or custom event), so there is nothing to check
// them against. Without a test event the first two checks say they were not run.
func (p *Platform) Test(ctx context.Context, req uploader.TestRequest) []uploader.CheckResult {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	src := p.set.EventSourceID
	version := uploader.VersionCheck(Spec(), p.cfg.APIVersion, now, uploader.SunsetWarnFor)
	cred := uploader.CheckResult{Check: uploader.CheckCredentials, Status: uploader.CheckNone,
		Detail: "the Events API has no read-only check of a token; only a test event (--send-test-event with test_event_code) tries it"}
	acct := uploader.CheckResult{Check: uploader.CheckAccount, Target: src, Status: uploader.CheckNone,
		Detail: "the Events API cannot look up an event set with these keys; only a test event tries it"}
	var convs []uploader.CheckResult
	for _, c := range req.Conversions {
		convs = append(convs, uploader.CheckResult{Check: uploader.CheckConversion, Target: c, Status: uploader.CheckNone,
			Detail: "TikTok accepts any standard or custom event name; there is no list to check it against"})
	}
	if !req.SendTestEvent {
		return append(append([]uploader.CheckResult{cred, acct}, convs...), version)
	}
	test := uploader.CheckResult{Check: uploader.CheckTestEvent, Status: uploader.CheckSkipped}
	switch {
	case len(req.Conversions) == 0:
		test.Detail = "no mapping sends to this destination"
	case p.set.TestEventCode == "":
		test.Target = req.Conversions[0]
		test.Detail = "test_event_code is not set: TikTok has no validate-only mode, so a test event is only sent with the code from Events Manager"
	default:
		test.Target = req.Conversions[0]
		client := uploader.TestClient(req.Client, p.cfg.Timeout)
		row, err := uploader.SendTest(ctx, p, client, []store.Conversion{uploader.TestConversion(test.Target, now)}, now)
		switch e := uploader.AsError(err); {
		case err == nil && row.Class == uploader.ClassAccepted:
			test.Status, test.Detail = uploader.CheckOK, "one event sent with test_event_code; see Events Manager → Test events"
			cred.Status, cred.Detail = uploader.CheckOK, "access token accepted (by the test event)"
			acct.Status, acct.Detail = uploader.CheckOK, "event set took the test event"
		case err == nil:
			test.Status, test.Reason, test.Detail = uploader.CheckFailed, row.Reason, row.Detail
		case e.Reason == "40102" || e.Reason == "40104" || e.Reason == "40105":
			cred = uploader.ResultOf(uploader.CheckCredentials, "", err)
			acct.Status, acct.Detail = uploader.CheckSkipped, "credentials failed"
			test.Status, test.Detail = uploader.CheckSkipped, "credentials failed"
		case e.Reason == "40001" || (e.Reason == "40002" && containsEventSource(e.Detail)):
			cred.Status, cred.Detail = uploader.CheckOK, "access token accepted (by the test event)"
			acct = uploader.ResultOf(uploader.CheckAccount, src, err)
			test.Status, test.Detail = uploader.CheckSkipped, "event set refused"
		default:
			test = uploader.ResultOf(uploader.CheckTestEvent, test.Target, err)
		}
	}
	return append(append(append([]uploader.CheckResult{cred, acct}, convs...), version), test)
}

func containsEventSource(detail string) bool {
	return strings.HasPrefix(detail, "event_source_id")
}
