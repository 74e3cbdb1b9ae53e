package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

var _ uploader.Tester = (*Platform)(nil)

// Test checks, in order: the access token and the dataset, both by reading the dataset
// (`GET /{version}/{dataset_id}?fields=id,name`: a token error is the credentials check, an
// unknown or inaccessible dataset the account check); event names (Meta takes any standard
// or custom name, so there is nothing to check them against); the Graph API version; and
// with SendTestEvent one event with test_event_code. Meta has no validate-only mode: a test
// event appears under Events Manager → Test events and is not dropped (platforms.md 2.6),
// so none is sent without a configured test_event_code.
func (p *Platform) Test(ctx context.Context, req uploader.TestRequest) []uploader.CheckResult {
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	client := uploader.TestClient(req.Client, p.cfg.Timeout)
	ds := p.set.DatasetID
	version := uploader.VersionCheck(Spec(), p.cfg.APIVersion, now, uploader.SunsetWarnFor)
	name, err := p.dataset(ctx, client)
	if err != nil {
		e := uploader.AsError(err)
		if code, _, _ := strings.Cut(e.Reason, "/"); code == "190" || code == "102" || code == "104" {
			return append([]uploader.CheckResult{uploader.ResultOf(uploader.CheckCredentials, "", err)}, uploader.Rest(req, "credentials failed", ds, version)...)
		}
		out := []uploader.CheckResult{
			{Check: uploader.CheckCredentials, Status: uploader.CheckOK, Detail: "access token accepted"},
			uploader.ResultOf(uploader.CheckAccount, ds, err),
		}
		return append(out, uploader.Rest(req, "dataset not reachable", "", version)...)
	}
	out := []uploader.CheckResult{
		{Check: uploader.CheckCredentials, Status: uploader.CheckOK, Detail: "access token accepted"},
		{Check: uploader.CheckAccount, Target: ds, Status: uploader.CheckOK, Detail: fmt.Sprintf("dataset %s %q readable", ds, name)},
	}
	for _, c := range req.Conversions {
		out = append(out, uploader.CheckResult{Check: uploader.CheckConversion, Target: c, Status: uploader.CheckNone,
			Detail: "Meta accepts any standard or custom event name; there is no list to check it against"})
	}
	out = append(out, version)
	if !req.SendTestEvent {
		return out
	}
	r := uploader.CheckResult{Check: uploader.CheckTestEvent, Status: uploader.CheckSkipped}
	switch {
	case len(req.Conversions) == 0:
		r.Detail = "no mapping sends to this destination"
	case p.set.TestEventCode == "":
		r.Target = req.Conversions[0]
		r.Detail = "test_event_code is not set: Meta has no validate-only mode, so a test event is only sent with the code from Events Manager → Test events"
	default:
		r.Target = req.Conversions[0]
		row, err := uploader.SendTest(ctx, p, client, []store.Conversion{uploader.TestConversion(r.Target, now)}, now)
		switch {
		case err != nil:
			r = uploader.ResultOf(uploader.CheckTestEvent, r.Target, err)
		case row.Class != uploader.ClassAccepted:
			r.Status, r.Reason, r.Detail = uploader.CheckFailed, row.Reason, row.Detail
		default:
			r.Status, r.Detail = uploader.CheckOK, "one event sent with test_event_code; see Events Manager → Test events (Meta does not drop test events)"
		}
	}
	return append(out, r)
}

// dataset reads the dataset's name; errors are classified as ParseResponse does.
func (p *Platform) dataset(ctx context.Context, client *http.Client) (string, error) {
	u := fmt.Sprintf("%s/%s/%s?fields=id,name", strings.TrimRight(p.cfg.BaseURL, "/"), p.cfg.APIVersion, p.set.DatasetID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+p.set.AccessToken)
	body, resp, err := uploader.Do(client, req)
	if err != nil {
		return "", err
	}
	var ok struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if resp.StatusCode/100 == 2 && json.Unmarshal(body, &ok) == nil && ok.ID != "" {
		return ok.Name, nil
	}
	_, err = p.ParseResponse(resp, body, nil)
	if err == nil {
		err = &uploader.Error{Class: uploader.ClassUnknown, Reason: "unparseable_response", Detail: "the dataset read answered without an id"}
	}
	return "", err
}
