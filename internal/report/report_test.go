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

	"github.com/closedloop/closedloop/store"
)

// counts is a Source over fixed rows, filtered by period the way the store filters.
type counts struct {
	conv   []store.ReportCount
	stages []store.StageCount
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
