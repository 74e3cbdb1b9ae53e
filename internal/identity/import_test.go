package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/store"
)

var update = flag.Bool("update", false, "rewrite golden files")

// openStore opens a real, migrated SQLite store in a temp dir.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "closedloop.db")
	// Open's migration goroutine waits for ctx to end: cancel it so goleak sees none left.
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		require.NoError(t, st.Close())
	})
	return st
}

// countingSink records batch sizes on the way to the real store.
type countingSink struct {
	identity.Sink
	batches []int
}

func (c *countingSink) UpsertIdentities(ctx context.Context, cs []store.IdentityCapture) (store.UpsertResult, error) {
	c.batches = append(c.batches, len(cs))
	return c.Sink.UpsertIdentities(ctx, cs)
}

// failingSink is a store that is down.
type failingSink struct{ err error }

func (f failingSink) UpsertIdentities(context.Context, []store.IdentityCapture) (store.UpsertResult, error) {
	return store.UpsertResult{}, f.err
}

func importFile(t *testing.T, name string, sink identity.Sink, opts identity.Options) (identity.Summary, error) {
	t.Helper()
	path := filepath.Join("..", "..", "testdata", "identities", name)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	format, err := identity.FormatOf(path)
	require.NoError(t, err)
	return identity.Import(context.Background(), f, format, sink, opts)
}

// TestImportGolden imports the sample files and compares the summary (counts, rejected lines
// and reasons) with a golden file; then imports again and expects nothing to change.
func TestImportGolden(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"captures.jsonl", "captures.csv"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := openStore(t)
			sink := &countingSink{Sink: st}
			var progress []identity.Summary
			sum, err := importFile(t, name, sink, identity.Options{
				Normalizer: us, BatchSize: 2,
				Progress: func(s identity.Summary) { progress = append(progress, s) },
			})
			require.NoError(t, err)
			require.Equal(t, sum.Read, sum.Imported+sum.Merged+sum.Unchanged+sum.Rejected)
			require.NotEmpty(t, progress)
			require.Equal(t, sum, progress[len(progress)-1], "the last progress report is the summary")
			for _, b := range sink.batches {
				require.LessOrEqual(t, b, 2)
			}

			got, err := json.MarshalIndent(sum, "", "  ")
			require.NoError(t, err)
			golden := filepath.Join("testdata", strings.ReplaceAll(name, ".", "_")+".summary.golden.json")
			if *update {
				require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.JSONEq(t, string(want), string(got))

			// Idempotent: a second import of the same file changes nothing.
			again, err := importFile(t, name, st, identity.Options{Normalizer: us})
			require.NoError(t, err)
			require.Equal(t, 0, again.Imported)
			require.Equal(t, 0, again.Merged)
			require.Equal(t, sum.Imported+sum.Merged+sum.Unchanged, again.Unchanged)
			require.Equal(t, sum.Rejections, again.Rejections)

			// Nothing raw reached the store or the summary.
			ids, err := st.LookupIdentities(context.Background(), []string{
				"hubspot:contact:901", "hubspot:contact:904", "pipedrive:deal:4411", "email:" + sha("sam.roe+ads@gmail.com"),
			})
			require.NoError(t, err)
			require.NotEmpty(t, ids)
			stored, err := json.Marshal(ids)
			require.NoError(t, err)
			for _, raw := range []string{"jane.doe@example.com", "sam.roe", "555-0101", "5550101", "lee.poe", "79460958", "12-34"} {
				require.NotContains(t, strings.ToLower(string(stored)), strings.ToLower(raw))
				require.NotContains(t, strings.ToLower(string(got)), strings.ToLower(raw))
			}
		})
	}
}

func TestImportOversizedLine(t *testing.T) {
	t.Parallel()
	ok := `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}`
	big := `{"subject":{"type":"contact","source":"h","id":"2"},"captured_at":"2026-10-01T12:00:00Z","user_agent":"` + strings.Repeat("x", identity.MaxPayload) + `"}`
	in := ok + "\n" + big + "\n" + strings.Replace(ok, `"1"`, `"3"`, 1) // no final newline
	st := openStore(t)
	sum, err := identity.Import(context.Background(), strings.NewReader(in), identity.FormatJSONL, st, identity.Options{})
	require.NoError(t, err)
	require.Equal(t, identity.Summary{Read: 3, Imported: 2, Rejected: 1,
		Rejections: []identity.Rejection{{Line: 2, Reason: "payload: larger than 1 MiB"}}}, sum)
	ids, err := st.LookupIdentities(context.Background(), []string{"h:contact:1", "h:contact:2", "h:contact:3"})
	require.NoError(t, err)
	require.Len(t, ids, 2)
	require.Contains(t, ids, "h:contact:3")
}

func TestImportFatalErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := identity.Import(ctx, strings.NewReader(""), identity.FormatCSV, failingSink{err: errNotCalled}, identity.Options{})
	require.EqualError(t, err, "import: empty CSV file (want a header row)")

	_, err = identity.Import(ctx, strings.NewReader("subject_type,subject_id,email\ncontact,1,a@b.co\n"), identity.FormatCSV, failingSink{err: errNotCalled}, identity.Options{})
	require.EqualError(t, err, "import: CSV header: column captured_at: required column missing from the header")
	var fe *identity.FieldError
	require.True(t, errors.As(err, &fe))

	_, err = identity.Import(ctx, strings.NewReader(""), identity.Format("xml"), failingSink{err: errNotCalled}, identity.Options{})
	require.Error(t, err)

	failing := failingSink{err: errors.New("database is locked")}
	in := `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}` + "\n"
	sum, err := identity.Import(ctx, strings.NewReader(in+in+in), identity.FormatJSONL, failing, identity.Options{BatchSize: 2})
	require.ErrorContains(t, err, "write batch ending at line 2: database is locked")
	require.Equal(t, 0, sum.Imported)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = identity.Import(cancelled, strings.NewReader(in), identity.FormatJSONL, failingSink{err: errNotCalled}, identity.Options{})
	require.ErrorIs(t, err, context.Canceled)
}

func TestImportKeepsBoundedRejections(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("not json\n", 50)
	sum, err := identity.Import(context.Background(), strings.NewReader(in), identity.FormatJSONL, failingSink{err: errNotCalled}, identity.Options{MaxRejections: 5})
	require.NoError(t, err)
	require.Equal(t, 50, sum.Rejected)
	require.Len(t, sum.Rejections, 5)
	require.Equal(t, 5, sum.Rejections[4].Line)
}

func TestFormatOf(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]identity.Format{"a.csv": identity.FormatCSV, "b.JSONL": identity.FormatJSONL, "c.ndjson": identity.FormatJSONL} {
		got, err := identity.FormatOf(path)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := identity.FormatOf("captures.json")
	require.Error(t, err)
}

// errNotCalled marks sinks a test expects Import never to reach.
var errNotCalled = errors.New("sink must not be called")
