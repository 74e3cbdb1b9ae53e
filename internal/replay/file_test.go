package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/store"
)

// rawPII is every raw email and phone in the test exports: none may reach the store or
// the summary.
var rawPII = []string{"jane.doe@example.com", "not-an-email", "415 555 0132", "4155550132", "415 555 0199", "4155550199"}

func requireNoRawPII(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, p := range rawPII {
		require.NotContains(t, string(b), p, "%s holds a raw identifier", what)
	}
}

// storeIdentity gives contact C-7 a gclid clicked on 2024-01-01: 129 days before D-4
// closed, outside Google's 90-day click window.
func storeIdentity(t *testing.T, st *store.Store) {
	t.Helper()
	_, err := st.UpsertIdentities(context.Background(), []store.IdentityCapture{{
		SubjectKey: crm.SubjectKey("hubspot", crm.ObjectContact, "C-7"),
		CapturedAt: time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC),
		Clicks:     []store.Click{{Type: "gclid", ID: "EAIaIQobChMI-c7", At: time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)}},
	}})
	require.NoError(t, err)
}

func TestFileCSV(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, db := openSQLite(t)
	storeIdentity(t, st)
	r := newReplayer(t, cfg, st, testNow)
	ctx := context.Background()

	sum, err := r.File(ctx, replay.FileOptions{Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, "csv", sum.Format)
	require.False(t, sum.Interrupted)
	require.EqualValues(t, 11, sum.Read)
	require.Equal(t, 12, sum.LastLine)
	require.Equal(t, 6, sum.Decoded)
	require.Equal(t, 5, sum.Matched)
	require.Equal(t, 1, sum.Unmatched)
	require.Equal(t, 5, sum.Undecodable)
	require.Equal(t, replay.Counts{Planned: 10, New: 10, Existing: 0, Awaiting: 4}, sum.Conversions)

	lines := map[int]string{}
	for _, e := range sum.Errors {
		lines[e.Line] = e.Field
	}
	require.Equal(t, map[int]string{7: "occurred_at", 8: "amount", 9: "", 10: "object_id", 11: "object_type"}, lines)
	require.Len(t, sum.Warnings, 1)
	require.Equal(t, 12, sum.Warnings[0].Line)
	require.Equal(t, "email", sum.Warnings[0].Field)

	d := byDest(sum)
	// Google: D-1 (email), D-2 (gclid), D-4 (stored gclid, too old for the click window),
	// D-10 (phone) ready; D-3 awaiting.
	require.Equal(t, replay.Counts{Planned: 5, New: 5, Awaiting: 1}, d["google-main"].Counts)
	require.Equal(t, 1, d["google-main"].WillExpire)
	require.Equal(t, map[string]int{"click_window_exceeded": 1}, d["google-main"].Reasons)
	// Meta: D-2, D-3 and D-4 have no identifier Meta can use (a gclid is Google's); D-2
	// closed 20 days before now, past Meta's 7 days, so it expires even if one arrives.
	require.Equal(t, replay.Counts{Planned: 5, New: 5, Awaiting: 3}, d["meta-crm"].Counts)
	require.Equal(t, 1, d["meta-crm"].WillExpire)
	require.Equal(t, map[string]int{"event_too_old": 1}, d["meta-crm"].Reasons)
	require.Len(t, sum.ByRule, 2)

	rows, err := st.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	require.Len(t, rows, 10)
	for _, c := range rows {
		require.True(t, c.Replay, "replayed rows are marked Replay")
	}
	before := tableCounts(t, db)

	// The same file again creates nothing.
	again, err := r.File(ctx, replay.FileOptions{Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, replay.Counts{Planned: 10, New: 0, Existing: 10, Awaiting: 0}, again.Conversions)
	require.Equal(t, before, tableCounts(t, db))

	out, err := json.Marshal(sum)
	require.NoError(t, err)
	requireNoRawPII(t, "summary JSON", out)
	var table bytes.Buffer
	require.NoError(t, sum.WriteTable(&table))
	requireNoRawPII(t, "summary table", table.Bytes())
	for _, c := range rows {
		b, err := json.Marshal(c)
		require.NoError(t, err)
		requireNoRawPII(t, "stored conversion", b)
	}
}

func TestFileDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, db := openSQLite(t)
	storeIdentity(t, st)
	r := newReplayer(t, cfg, st, testNow)
	ctx := context.Background()

	before := tableCounts(t, db)
	dry, err := r.File(ctx, replay.FileOptions{Options: replay.Options{DryRun: true}, Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.True(t, dry.DryRun)
	require.Equal(t, before, tableCounts(t, db), "a dry run writes nothing")

	// What the dry run announced is what a real run then does.
	real, err := r.File(ctx, replay.FileOptions{Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, dry.Conversions, real.Conversions)
	require.Equal(t, dry.ByDestination, real.ByDestination)
	require.Equal(t, dry.ByRule, real.ByRule)

	// A dry run after it sees everything existing.
	dry2, err := r.File(ctx, replay.FileOptions{Options: replay.Options{DryRun: true}, Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, 0, dry2.Conversions.New)
	require.Equal(t, 10, dry2.Conversions.Existing)
}

func TestFileDryRunCountsARepeatedChangeOnce(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	path := filepath.Join(t.TempDir(), "twice.jsonl")
	line := `{"source":"hubspot","object_type":"deal","object_id":"D-1","stage":"closedwon","occurred_at":"2024-05-08T10:00:00Z","click_ids":{"gclid":"g-1"}}`
	require.NoError(t, os.WriteFile(path, []byte(line+"\n"+line+"\n"), 0o644))

	dry, err := r.File(context.Background(), replay.FileOptions{Options: replay.Options{DryRun: true}, Path: path})
	require.NoError(t, err)
	real, err := r.File(context.Background(), replay.FileOptions{Path: path})
	require.NoError(t, err)
	require.Equal(t, real.Conversions, dry.Conversions)
	require.Equal(t, 2, dry.Conversions.New) // google-main and meta-crm, once each
}

func TestFileDestinationFilter(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	ctx := context.Background()

	meta, err := r.File(ctx, replay.FileOptions{Options: replay.Options{Destinations: []string{"meta-crm"}}, Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, []string{"meta-crm"}, meta.Destinations)
	require.Len(t, meta.ByDestination, 1)
	require.Equal(t, 5, meta.Conversions.New)
	rows, err := st.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	for _, c := range rows {
		require.Equal(t, "meta-crm", c.Destination)
	}

	all, err := r.File(ctx, replay.FileOptions{Path: testdata("deals.csv")})
	require.NoError(t, err)
	require.Equal(t, 5, byDest(all)["google-main"].New)
	require.Equal(t, 0, byDest(all)["meta-crm"].New)
	require.Equal(t, 5, byDest(all)["meta-crm"].Existing)

	_, err = r.File(ctx, replay.FileOptions{Options: replay.Options{Destinations: []string{"tiktok-crm"}}, Path: testdata("deals.csv")})
	require.ErrorContains(t, err, `destination "tiktok-crm": no mapping rule sends conversions to it`)
}

func TestFileJSONLines(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)

	sum, err := r.File(context.Background(), replay.FileOptions{Path: testdata("deals.jsonl")})
	require.NoError(t, err)
	require.Equal(t, "jsonl", sum.Format)
	require.EqualValues(t, 5, sum.Read)
	require.Equal(t, 2, sum.Decoded)
	require.Equal(t, 4, sum.Conversions.New)
	got := map[int]string{}
	for _, e := range sum.Errors {
		got[e.Line] = e.Field
	}
	require.Equal(t, map[int]string{3: "occurred_at", 4: "ocurred_at", 6: ""}, got)
	out, err := json.Marshal(sum)
	require.NoError(t, err)
	requireNoRawPII(t, "summary JSON", out)
}

func TestFileNativeFormatNamesTheEvent(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	src, err := os.ReadFile(filepath.Join("..", "..", "crm", "testdata", "hubspot", "one_bad.json"))
	require.NoError(t, err)
	var compact bytes.Buffer
	require.NoError(t, json.Compact(&compact, src))
	path := filepath.Join(t.TempDir(), "hubspot.jsonl")
	require.NoError(t, os.WriteFile(path, append(compact.Bytes(), '\n'), 0o644))

	sum, err := r.File(context.Background(), replay.FileOptions{Path: path, Format: "HubSpot"})
	require.NoError(t, err)
	require.Equal(t, "hubspot", sum.Format)
	require.NotEmpty(t, sum.Errors)
	for _, e := range sum.Errors {
		require.Equal(t, 1, e.Line)
		require.NotNil(t, e.Event, "a bad event of a batch names its index")
	}
	require.Positive(t, sum.Decoded)
}

func TestFileRejectsBadInput(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	for _, tc := range []struct {
		name, path, format, want string
	}{
		{"unknown column", write("typo.csv", "source,object_type,object_id,stage,ocurred_at\n"), "", `unknown column "ocurred_at"`},
		{"missing column", write("short.csv", "source,object_type,object_id,stage\n"), "", "missing column occurred_at"},
		{"empty", write("empty.csv", ""), "", "the file is empty"},
		{"format", write("x.jsonl", "{}\n"), "xml", `format "xml"`},
		{"no file", filepath.Join(dir, "absent.csv"), "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.File(context.Background(), replay.FileOptions{Path: tc.path, Format: tc.format})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestFileCloseTimeRange(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	sum, err := r.File(context.Background(), replay.FileOptions{
		Path: testdata("deals.csv"),
		From: time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC), To: time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC),
	})
	require.NoError(t, err)
	require.Equal(t, 1, sum.Decoded) // D-1 only
	require.EqualValues(t, 5, sum.Skipped)
	require.Equal(t, 2, sum.Conversions.New)
}

func TestFileCancelled(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, db := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sum, err := r.File(ctx, replay.FileOptions{Path: testdata("deals.csv")})
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, sum.Interrupted)
	require.Zero(t, tableCounts(t, db)["conversions"])
}

func TestSummaryTableGolden(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	storeIdentity(t, st)
	r := newReplayer(t, cfg, st, testNow)
	sum, err := r.File(context.Background(), replay.FileOptions{Options: replay.Options{DryRun: true}, Path: testdata("deals.csv")})
	require.NoError(t, err)
	sum.ElapsedSeconds = 0
	sum.File = "deals.csv"
	var got bytes.Buffer
	require.NoError(t, sum.WriteTable(&got))
	golden := testdata("summary.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, got.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), got.String())
	require.True(t, strings.Contains(got.String(), "Nothing was written"))
}

func TestFileInterruptedThenRerun(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t) // batch_size 50
	st, db := openSQLite(t)
	r := newReplayer(t, cfg, st, testNow)
	var b strings.Builder
	b.WriteString("source,object_type,object_id,stage,occurred_at,gclid\n")
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&b, "hubspot,deal,D-%d,closedwon,2024-05-09T10:00:00Z,G-%d\n", i, i)
	}
	path := filepath.Join(t.TempDir(), "big.csv")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))

	ctx, cancel := context.WithCancel(context.Background())
	opts := replay.FileOptions{Path: path}
	opts.Progress = func(done, total int64) {
		require.EqualValues(t, 200, total)
		if done > 0 {
			cancel()
		}
	}
	cut, err := r.File(ctx, opts)
	cancel()
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, cut.Interrupted)
	require.EqualValues(t, 50, cut.Read, "the batch in hand is finished, then it stops")
	require.Equal(t, 51, cut.LastLine)
	require.Equal(t, 100, cut.Conversions.New)
	var table bytes.Buffer
	require.NoError(t, cut.WriteTable(&table))
	require.Contains(t, table.String(), "INTERRUPTED: stopped after line 51.")

	rest, err := r.File(context.Background(), replay.FileOptions{Path: path})
	require.NoError(t, err)
	require.Equal(t, replay.Counts{Planned: 400, New: 300, Existing: 100, Awaiting: 150}, rest.Conversions) // Meta cannot use a gclid
	require.Equal(t, 400, tableCounts(t, db)["conversions"])
}
