package report

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/store"
)

// counts is a Source over fixed rows, filtered by period the way the store filters.
type counts struct {
	conv   []store.ReportCount
	stages []store.StageCount
	ids    []store.IdentifierCount
}

func (c counts) IdentifierCounts(_ context.Context, since, until time.Time) ([]store.IdentifierCount, error) {
	var out []store.IdentifierCount
	for _, r := range c.ids {
		if !r.Day.Before(since) && r.Day.Before(until) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (c counts) ReportCounts(_ context.Context, since, until time.Time) ([]store.ReportCount, error) {
	var out []store.ReportCount
	for _, r := range c.conv {
		if !r.Day.Before(since) && r.Day.Before(until) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (c counts) StageCounts(_ context.Context, since, until time.Time) ([]store.StageCount, error) {
	var out []store.StageCount
	for _, r := range c.stages {
		if !r.Day.Before(since) && r.Day.Before(until) {
			out = append(out, r)
		}
	}
	return out, nil
}

var (
	day1 = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	day2 = day1.AddDate(0, 0, 1)
	prev = day1.AddDate(0, 0, -5)
)

func rc(day time.Time, dest, conv, rule string, st store.State, reason string, ident bool, n int) store.ReportCount {
	return store.ReportCount{Day: day, Destination: dest, Platform: "google", ConversionName: conv, Rule: rule, State: st, Reason: reason, WithIdentifier: ident, Count: n}
}

func fixture() counts {
	return counts{
		conv: []store.ReportCount{
			rc(day1, "g", "won", "won-rule", store.StateAccepted, "", true, 8),
			rc(day1, "g", "won", "won-rule", store.StateRejected, "INVALID_GCLID", true, 1),
			rc(day1, "g", "won", "won-rule", store.StateAwaitingIdentity, "", false, 1),
			rc(day2, "g", "won", "won-rule", store.StateReady, "http_503", true, 2),
			rc(day2, "g", "won", "won-rule", store.StateReady, "", true, 3),
			rc(day2, "g", "won", "won-rule", store.StateSkipped, "consent_denied", true, 1),
			// previous period: everything accepted
			rc(prev, "g", "won", "won-rule", store.StateAccepted, "", true, 10),
			// only in the previous period: gone silent now
			rc(prev, "g", "sql", "sql-rule", store.StateAccepted, "", true, 4),
		},
		stages: []store.StageCount{
			{Day: day1, Source: "hubspot", Rule: "won-rule", Count: 10},
			{Day: day2, Source: "hubspot", Rule: "won-rule", Count: 6},
			{Day: day2, Source: "hubspot", Rule: "", Count: 5},
		},
		ids: []store.IdentifierCount{
			{Day: day1, Destination: "g", Platform: "google", ConversionName: "won", Count: 10, WithClickID: 9, WithEmail: 5, WithPhone: 2},
			{Day: day2, Destination: "g", Platform: "google", ConversionName: "won", Count: 6, WithClickID: 3, WithEmail: 6, WithLeadID: 1},
			{Day: prev, Destination: "g", Platform: "google", ConversionName: "won", Count: 10, WithClickID: 10},
			{Day: prev, Destination: "g", Platform: "google", ConversionName: "sql", Count: 4, WithEmail: 4},
		},
	}
}

func build(t *testing.T) Report {
	t.Helper()
	r, err := Build(context.Background(), fixture(), Options{
		Since: day1, Until: day1.AddDate(0, 0, 7), RateChangeThreshold: 0.10, SparseWeeklyVolume: 50,
	})
	require.NoError(t, err)
	return r
}

func TestBuildCountsRatesAndFlags(t *testing.T) {
	t.Parallel()
	r := build(t)
	require.Equal(t, 21, r.StageTotal)
	require.Equal(t, 5, r.StageNoRule)
	require.Len(t, r.Conversions, 2)

	sql := r.Conversions[0]
	require.Equal(t, "sql", sql.Conversion)
	require.Zero(t, sql.Total.Created)
	require.Equal(t, 4, sql.Previous.Created)
	require.True(t, sql.AcceptedRateFlag, "a conversion that went silent is flagged")

	won := r.Conversions[1]
	require.Len(t, won.Days, 2)
	require.Equal(t, 10, won.Days[0].Matched)
	require.Equal(t, 6, won.Days[1].Matched)
	tot := won.Total
	require.Equal(t, 16, tot.Created)
	require.Equal(t, 8, tot.Accepted)
	require.Equal(t, 1, tot.Rejected)
	require.Equal(t, map[string]int{"INVALID_GCLID": 1}, tot.RejectedBy)
	require.Equal(t, 1, tot.Awaiting)
	require.Equal(t, 2, tot.InRetry)
	require.Equal(t, 3, tot.Pending)
	require.Equal(t, 1, tot.Skipped)
	require.InDelta(t, 15.0/16, won.MatchRate, 1e-9)
	require.InDelta(t, 0.5, won.AcceptedRate, 1e-9)
	require.InDelta(t, 1.0, won.PreviousAcceptedRate, 1e-9)
	require.True(t, won.AcceptedRateFlag, "accepted rate fell 50 points")
	require.False(t, won.MatchRateFlag, "match rate moved 6 points, under the threshold")
	require.InDelta(t, 16.0, won.WeeklyVolume, 1e-9)
	require.True(t, won.SparseFlag)
}

func TestBuildRejectsEmptyPeriod(t *testing.T) {
	t.Parallel()
	_, err := Build(context.Background(), fixture(), Options{Since: day1, Until: day1})
	require.ErrorContains(t, err, "must be after")
}

func TestRenderTableFitsEightyColumns(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, Render(&buf, build(t), "table"))
	for _, line := range strings.Split(buf.String(), "\n") {
		require.LessOrEqual(t, len([]rune(line)), 80, "line too wide: %q", line)
	}
	require.Contains(t, buf.String(), "INVALID_GCLID 1")
	require.Contains(t, buf.String(), "under 50/week")
}

func TestRenderJSONAndCSVCarryTheSameNumbers(t *testing.T) {
	t.Parallel()
	r := build(t)
	var js bytes.Buffer
	require.NoError(t, Render(&js, r, "json"))
	var back Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, r.Conversions[1].Total.Accepted, back.Conversions[1].Total.Accepted)

	var cs bytes.Buffer
	require.NoError(t, Render(&cs, r, "csv"))
	recs, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	head := recs[0]
	col := func(name string) int {
		for i, h := range head {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %s", name)
		return -1
	}
	var total []string
	for _, rec := range recs[1:] {
		if rec[col("conversion")] == "won" && rec[col("day")] == "total" {
			total = rec
		}
	}
	require.Equal(t, "8", total[col("accepted")])
	require.Equal(t, "16", total[col("created")])
	require.Equal(t, "true", total[col("accepted_rate_flag")])
}

func TestRenderUnknownFormat(t *testing.T) {
	t.Parallel()
	require.ErrorContains(t, Render(&bytes.Buffer{}, Report{}, "xml"), `unknown format "xml"`)
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	until := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"7d":                   until.AddDate(0, 0, -7),
		"2w":                   until.AddDate(0, 0, -14),
		"36h":                  until.Add(-36 * time.Hour),
		"2026-11-01":           time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		"2026-11-01T10:00:00Z": time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC),
	} {
		got, err := ParseSince(in, until)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: got %s want %s", in, got, want)
	}
	for _, bad := range []string{"", "d", "-3d", "yesterday", "7x"} {
		_, err := ParseSince(bad, until)
		require.Error(t, err, bad)
	}
}

// TestBuildMatchQuality: per conversion and day, the share of conversions created that
// carry each identifier kind, and the previous period's, so a moved match rate shows
// which identifier moved it; the same numbers in table, json and csv.
func TestBuildMatchQuality(t *testing.T) {
	t.Parallel()
	r := build(t)
	won := r.Conversions[1]
	require.Equal(t, "won", won.Conversion)
	require.Equal(t, IdentifierKinds{ClickID: 12, Email: 11, Phone: 2, LeadID: 1}, won.Total.Identifiers)
	require.InDelta(t, 12.0/16, won.IdentifierShare.ClickID, 1e-9)
	require.InDelta(t, 11.0/16, won.IdentifierShare.Email, 1e-9)
	require.InDelta(t, 1.0, won.PreviousIdentifierShare.ClickID, 1e-9)
	require.Len(t, won.Days, 2)
	require.Equal(t, IdentifierShares{ClickID: 0.9, Email: 0.5, Phone: 0.2}, won.Days[0].IdentifierShare)
	require.InDelta(t, 0.5, won.Days[1].IdentifierShare.ClickID, 1e-9)
	require.InDelta(t, 1.0/6, won.Days[1].IdentifierShare.LeadID, 1e-9)

	var table bytes.Buffer
	require.NoError(t, Render(&table, r, "table"))
	require.Contains(t, table.String(), "ids     click  email  phone   lead")
	require.Contains(t, table.String(), "11-20     90%    50%    20%     0%\n")
	require.Contains(t, table.String(), "prev     100%     0%     0%     0%\n")

	var js bytes.Buffer
	require.NoError(t, Render(&js, r, "json"))
	var back Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, won.Days[0].IdentifierShare, back.Conversions[1].Days[0].IdentifierShare)
	require.Equal(t, won.Total.Identifiers, back.Conversions[1].Total.Identifiers)

	var cs bytes.Buffer
	require.NoError(t, Render(&cs, r, "csv"))
	recs, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var day1Row []string
	for _, rec := range recs[1:] {
		if rec[col["conversion"]] == "won" && rec[col["day"]] == "2026-11-20" {
			day1Row = rec
		}
	}
	require.NotNil(t, day1Row)
	require.Equal(t, "9", day1Row[col["with_click_id"]])
	require.Equal(t, "0.9000", day1Row[col["click_id_share"]])
	require.Equal(t, "0.2000", day1Row[col["phone_share"]])
}

func TestFormatPeriod(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{7 * 24 * time.Hour, "7 days"},
		{24 * time.Hour, "1 day"},
		{7*24*time.Hour + time.Hour, "7d 1h"},
		{36 * time.Hour, "1d 12h"},
		{90 * time.Minute, "1h 30m"},
		{2*24*time.Hour + 5*time.Minute, "2d 5m"},
		{7*24*time.Hour + 20*time.Second, "7 days"},
		{12 * time.Second, "0m"},
	} {
		require.Equal(t, tt.want, FormatPeriod(tt.d), tt.d.String())
	}
	var buf bytes.Buffer
	r := build(t)
	r.Until = r.Since.Add(7*24*time.Hour + time.Hour)
	require.NoError(t, Render(&buf, r, "table"))
	require.Contains(t, buf.String(), "(7d 1h, UTC)")
	require.NotContains(t, buf.String(), "7.04")
}

// TestRenderCRMEnrichment: the report's table and JSON say, per CRM connection, what waits
// for its API, since when, and a pause with its reason and time.
func TestRenderCRMEnrichment(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	until := since.Add(time.Hour)
	r := Report{Since: since.Add(-24 * time.Hour), Until: since, CRMs: []enrich.ConnectionOverview{
		{Name: "hubspot-main", Kind: "hubspot", Source: "hubspot", Conversions: 120, Oldest: &since, OldestAge: "3h 5m"},
		{Name: "attio-main", Kind: "attio", Source: "attio", Pending: 4, Oldest: &since, OldestAge: "40s", Paused: true,
			PauseReason: "crm_unauthorized", PauseDetail: "crm setup error: HTTP 401", PausedSince: &since, PausedUntil: &until},
		{Source: "zoho", Conversions: 2, Oldest: &since, OldestAge: "1d 2h"},
	}}
	var table strings.Builder
	require.NoError(t, Render(&table, r, "table"))
	out := table.String()
	require.Contains(t, out, "hubspot-main     hubspot       120 conversions      0 stage changes, oldest 3h 5m")
	require.Contains(t, out, "attio-main       attio           0 conversions      4 stage changes, oldest 40s\n! paused        crm_unauthorized since 2026-03-02 09:00 until 10:00: crm setup error: HTTP 401")
	require.Contains(t, out, "(no connection)  zoho")
	require.Contains(t, out, "! no connection enriches this source")
	var js strings.Builder
	require.NoError(t, Render(&js, r, "json"))
	require.Contains(t, js.String(), `"connection": "attio-main"`)
	require.Contains(t, js.String(), `"awaiting_stage_changes": 4`)
	require.Contains(t, js.String(), `"paused_since": "2026-03-02T09:00:00Z"`)
}
