package main

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// destinationsSecrets are the credentials of destinationsConfig; no output may hold one.
var destinationsSecrets = []string{"dt-client-secret", "dt-refresh-token", "dt-meta-token", "dt-tiktok-token"}

// destinationsConfig points one destination of every platform at the sandbox at url.
func destinationsConfig(t *testing.T, url, extraMappings string) string {
	t.Helper()
	cfg := `kafka: {brokers: ["127.0.0.1:9092"]}
store: {driver: sqlite, path: ` + filepath.Join(t.TempDir(), "closedloop.db") + `}
destinations:
  google-main:
    platform: google
    base_url: ` + url + `
    token_url: ` + url + `/token
    customer_id: "1234567890"
    client_id: dt-client-id
    client_secret: dt-client-secret
    refresh_token: dt-refresh-token
  ads-legacy:
    platform: google_ads
    base_url: ` + url + `
    token_url: ` + url + `/token
    customer_id: "1234567890"
    login_customer_id: "9999999999"
    client_id: dt-client-id
    client_secret: dt-client-secret
    refresh_token: dt-refresh-token
  meta-crm:
    platform: meta
    base_url: ` + url + `
    dataset_id: "123456789012345"
    access_token: dt-meta-token
    test_event_code: TEST123
  tiktok-crm:
    platform: tiktok
    base_url: ` + url + `
    event_source_id: "7312345678901234567"
    access_token: dt-tiktok-token
    test_event_code: TEST456
mappings:
  - name: closed-won
    match: {object_type: deal, stage: [closedwon]}
    value: {field: amount, default_currency: USD}
    destinations:
      - {destination: google-main, conversion: "987654321"}
      - {destination: ads-legacy, conversion: "555"}
      - {destination: meta-crm, conversion: Purchase}
      - {destination: tiktok-crm, conversion: ClosedWon}
` + extraMappings
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

type destinationsSetup struct {
	srv  *sandbox.Server
	path string
}

func setupDestinations(t *testing.T, opts sandbox.Options, extraMappings string) destinationsSetup {
	t.Helper()
	srv := platforms.NewSandbox(opts, zap.NewNop())
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return destinationsSetup{srv: srv, path: destinationsConfig(t, hs.URL, extraMappings)}
}

// run runs `destinations test --json` and returns the result and whether it exited 1.
func (s destinationsSetup) run(t *testing.T, args ...string) (destinationsResult, bool) {
	t.Helper()
	out, err := runCLI(append([]string{"destinations", "test", "--config", s.path, "--json"}, args...)...)
	for _, secret := range destinationsSecrets {
		require.NotContains(t, out, secret)
	}
	failed := false
	if err != nil {
		var ex *exitError
		require.True(t, errors.As(err, &ex), "unexpected error %v\n%s", err, out)
		require.Equal(t, 1, ex.code, out)
		failed = true
	}
	var res destinationsResult
	require.NoError(t, json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &res), out)
	require.Equal(t, !failed, res.OK)
	return res, failed
}

// find returns the one check of destination named check (on target, when not "").
func find(t *testing.T, res destinationsResult, dest, check, target string) checkLine {
	t.Helper()
	for _, d := range res.Destinations {
		if d.Destination != dest {
			continue
		}
		for _, c := range d.Checks {
			if c.Check == check && (target == "" || c.Target == target) {
				return checkLine{Status: string(c.Status), Reason: c.Reason, Detail: c.Detail}
			}
		}
	}
	t.Fatalf("no %s check of %s (target %q) in %+v", check, dest, target, res)
	return checkLine{}
}

type checkLine struct{ Status, Reason, Detail string }

// failedChecks lists "destination/check/target" of every failed line.
func failedChecks(res destinationsResult) []string {
	var out []string
	for _, d := range res.Destinations {
		for _, c := range d.Checks {
			if c.Failed() {
				out = append(out, d.Destination+"/"+c.Check+"/"+c.Target)
			}
		}
	}
	return out
}

func TestDestinationsTestAllPass(t *testing.T) {
	t.Parallel()
	s := setupDestinations(t, sandbox.Options{}, "")
	res, failed := s.run(t, "--send-test-event")
	require.False(t, failed, "%v", failedChecks(res))
	require.Len(t, res.Destinations, 4)
	require.Equal(t, "ok", find(t, res, "ads-legacy", "conversion", "555").Status)
	require.Equal(t, "ok", find(t, res, "ads-legacy", "test_event", "").Status)
	require.Contains(t, find(t, res, "ads-legacy", "test_event", "").Detail, "validateOnly")
	require.Equal(t, "n/a", find(t, res, "google-main", "account", "").Status)
	require.Equal(t, "ok", find(t, res, "google-main", "conversion", "987654321").Status)
	require.Equal(t, "ok", find(t, res, "meta-crm", "account", "").Status)
	require.Equal(t, "n/a", find(t, res, "meta-crm", "conversion", "Purchase").Status)
	require.Equal(t, "ok", find(t, res, "meta-crm", "test_event", "").Status)
	require.Equal(t, "ok", find(t, res, "tiktok-crm", "credentials", "").Status, "the test event tried the token")
	require.Equal(t, "ok", find(t, res, "tiktok-crm", "test_event", "").Status)

	// Test events went only through test modes: nothing counted as a real Google conversion.
	counts := s.srv.Counts()
	require.Zero(t, counts[google.AdsName].AcceptedUnique)
	require.Zero(t, counts[google.DataManagerName].AcceptedUnique)

	// Without --send-test-event nothing is sent to Meta or TikTok, and TikTok says what it cannot check.
	s.srv.Reset()
	res, failed = s.run(t)
	require.False(t, failed)
	require.Zero(t, s.srv.Counts()[meta.Name].Received)
	require.Zero(t, s.srv.Counts()[tiktok.Name].Received)
	require.Equal(t, "n/a", find(t, res, "tiktok-crm", "credentials", "").Status)
}

func TestDestinationsTestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults sandbox.Faults
		// want lists every failed check (destination/check/target) and a word of its detail.
		want map[string]string
	}{
		{"bad action id", sandbox.Faults{Lookup: sandbox.LookupFaults{UnknownActions: []string{"987654321", "555"}}},
			map[string]string{
				"google-main/conversion/987654321": "conversion action not found",
				"ads-legacy/conversion/555":        "no conversion action with id 555",
			}},
		{"removed action", sandbox.Faults{Lookup: sandbox.LookupFaults{ConversionActions: []sandbox.ConversionAction{
			{ID: "555", Name: "Closed Won (CRM)", Status: "REMOVED"}, {ID: "987654321", Name: "Won", Status: "REMOVED"}}}},
			map[string]string{
				"google-main/conversion/987654321": "REMOVED",
				"ads-legacy/conversion/555":        `"Closed Won (CRM)" is REMOVED`,
			}},
		{"wrong type", sandbox.Faults{Lookup: sandbox.LookupFaults{ConversionActions: []sandbox.ConversionAction{
			{ID: "555", Name: "Site purchase", Type: "WEBPAGE"}}}},
			map[string]string{"ads-legacy/conversion/555": "of type WEBPAGE"}},
		{"action under another customer", sandbox.Faults{Lookup: sandbox.LookupFaults{ConversionActions: []sandbox.ConversionAction{
			{ID: "555", Name: "MCC won", Owner: "9999999999"}, {ID: "987654321", Name: "MCC won", Owner: "9999999999"}}}},
			map[string]string{
				"google-main/conversion/987654321": "belongs to customer 9999999999",
				"ads-legacy/conversion/555":        "belongs to customer 9999999999, not customer_id 1234567890",
			}},
		{"customer not accessible", sandbox.Faults{Lookup: sandbox.LookupFaults{UnknownCustomers: []string{"1234567890"}}},
			map[string]string{"ads-legacy/account/1234567890": "USER_PERMISSION_DENIED"}},
		{"expired token", sandbox.Faults{ExpiredToken: true},
			map[string]string{
				"google-main/credentials/": "refused",
				"ads-legacy/credentials/":  "refused",
				"meta-crm/credentials/":    "Session has expired",
				"tiktok-crm/credentials/":  "expired",
			}},
		{"unknown dataset", sandbox.Faults{Lookup: sandbox.LookupFaults{UnknownDatasets: []string{"123456789012345", "7312345678901234567"}}},
			map[string]string{
				"meta-crm/account/123456789012345":       "does not exist",
				"tiktok-crm/account/7312345678901234567": "event_source_id",
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := setupDestinations(t, sandbox.Options{}, "")
			s.srv.SetFaults(tc.faults)
			res, failed := s.run(t, "--send-test-event")
			require.True(t, failed)
			got := failedChecks(res)
			want := make([]string, 0, len(tc.want))
			for k := range tc.want {
				want = append(want, k)
			}
			require.ElementsMatch(t, want, got)
			for k, word := range tc.want {
				parts := strings.SplitN(k, "/", 3)
				c := find(t, res, parts[0], parts[1], parts[2])
				require.Contains(t, c.Reason+": "+c.Detail, word, k)
			}
		})
	}
}

func TestDestinationsTestRefusedRefreshToken(t *testing.T) {
	t.Parallel()
	s := setupDestinations(t, sandbox.Options{RefreshToken: "another-refresh-token"}, "")
	res, failed := s.run(t, "--destination", "ads-legacy")
	require.True(t, failed)
	require.Len(t, res.Destinations, 1)
	c := find(t, res, "ads-legacy", "credentials", "")
	require.Equal(t, "failed", c.Status)
	require.Equal(t, "oauth_invalid_grant", c.Reason)
	require.Equal(t, "skipped", find(t, res, "ads-legacy", "conversion", "555").Status)
	require.Equal(t, "ok", find(t, res, "ads-legacy", "api_version", "").Status, "the version check needs no network")
}

func TestDestinationsTestTable(t *testing.T) {
	t.Parallel()
	s := setupDestinations(t, sandbox.Options{}, "")
	s.srv.SetFaults(sandbox.Faults{Lookup: sandbox.LookupFaults{UnknownActions: []string{"555"}}})
	out, err := runCLI("destinations", "test", "--config", s.path, "--destination", "ads-legacy")
	var ex *exitError
	require.True(t, errors.As(err, &ex))
	require.Equal(t, 1, ex.code)
	require.Contains(t, out, "DESTINATION")
	require.Regexp(t, `ads-legacy \(google_ads\)\s+conversion\s+555\s+failed\s+NO_CONVERSION_ACTION_FOUND: no conversion action with id 555 is visible to customer 1234567890`, out)
	require.Contains(t, out, "some checks failed")
	for _, secret := range destinationsSecrets {
		require.NotContains(t, out, secret)
	}

	_, err = runCLI("destinations", "test", "--config", s.path, "--destination", "nope")
	requireExit2(t, err, `--destination: "nope" is not configured`)
}

const byNameRule = `  - name: by-name
    match: {object_type: deal, stage: [contractsigned]}
    destinations:
      - {destination: ads-legacy, conversion: {name: "Closed Won (CRM)"}}
`

func TestConversionActionByName(t *testing.T) {
	t.Parallel()
	wonUnderClient := sandbox.ConversionAction{ID: "777", Name: "Closed Won (CRM)", Owner: "1234567890"}
	wonUnderManager := sandbox.ConversionAction{ID: "888", Name: "Closed Won (CRM)", Owner: "9999999999"}
	cases := []struct {
		name    string
		actions []sandbox.ConversionAction
		want    []string // in `mappings check` output (ok) or its error
		ok      bool
	}{
		{"one match", []sandbox.ConversionAction{wonUnderClient}, []string{`conversion action 777 (name "Closed Won (CRM)")`}, true},
		{"ambiguous under manager and client", []sandbox.ConversionAction{wonUnderClient, wonUnderManager}, []string{
			`mappings[1] (by-name): destinations[0].conversion: conversion action name "Closed Won (CRM)" is ambiguous in customer 1234567890`,
			"id 777 (UPLOAD_CLICKS, ENABLED, owned by customer 1234567890)", "id 888 (UPLOAD_CLICKS, ENABLED, owned by customer 9999999999)",
		}, false},
		{"missing", nil, []string{`no conversion action named "Closed Won (CRM)" is visible to customer 1234567890`}, false},
		{"only under the manager", []sandbox.ConversionAction{wonUnderManager}, []string{"belongs to customer 9999999999"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := setupDestinations(t, sandbox.Options{}, byNameRule)
			s.srv.SetFaults(sandbox.Faults{Lookup: sandbox.LookupFaults{ConversionActions: tc.actions}})
			out, err := runCLI("mappings", "check", "--config", s.path)
			if tc.ok {
				require.NoError(t, err, out)
			} else {
				require.Error(t, err)
				out = err.Error()
			}
			for _, w := range tc.want {
				require.Contains(t, out, w)
			}
			res, failed := s.run(t, "--destination", "ads-legacy")
			require.Equal(t, !tc.ok, failed, "%v", failedChecks(res))
			c := find(t, res, "ads-legacy", "conversion_name", "Closed Won (CRM)")
			if tc.ok {
				require.Equal(t, "resolves to 777", c.Detail)
				require.Equal(t, "ok", find(t, res, "ads-legacy", "conversion", "777").Status)
			} else {
				require.Equal(t, "failed", c.Status)
				require.Contains(t, c.Detail, tc.want[len(tc.want)-1])
			}
		})
	}
}

func TestConversionByNameOnlyWherePlatformsLookNamesUp(t *testing.T) {
	t.Parallel()
	s := setupDestinations(t, sandbox.Options{}, `  - name: meta-by-name
    match: {object_type: deal, stage: [contractsigned]}
    destinations:
      - {destination: meta-crm, conversion: {name: Purchase}}
      - {destination: google-main, conversion: {name: Won}}
`)
	_, err := runCLI("mappings", "check", "--config", s.path)
	require.ErrorContains(t, err, "destinations[0].conversion: meta does not look up conversions by name; give the event name itself")
	require.ErrorContains(t, err, "destinations[1].conversion: google does not look up conversions by name; give the conversion action id itself")
}
