package mappingreload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/uploader/platforms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var destinations = map[string]string{"google-main": "google", "meta-main": "meta"}

// configDoc is a whole config file whose only mapping rule sends stage to google-main.
// The other sections stand for the rest of the file, which FileLoader must ignore.
func configDoc(stage string) string {
	return `log: {level: info}
destinations:
  google-main: {platform: google, customer_id: "${GOOGLE_CUSTOMER_ID}"}
mappings:
  - name: won
    match: {stage: [` + stage + `]}
    destinations:
      - destination: google-main
        conversion: "123"
`
}

const invalidDoc = `mappings:
  - name: won
    match: {stage: [closedwon]}
    destinations:
      - destination: googel-main
        conversion: "1"
      - destination: google-main
        conversion: abc
`

type fixture struct {
	path   string
	loads  atomic.Int64
	logs   *observer.ObservedLogs
	r      *Reloader
	cancel context.CancelFunc
	done   chan error
}

func setup(t *testing.T, debounce time.Duration, signals <-chan os.Signal) *fixture {
	t.Helper()
	f := &fixture{path: filepath.Join(t.TempDir(), "closedloop.yaml"), done: make(chan error, 1)}
	f.write(t, configDoc("closedwon"))
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	load := FileLoader(f.path, platforms.Targets(destinations))
	r, err := New(Config{
		Path:     f.path,
		Load:     func() (*crm.Mapping, error) { f.loads.Add(1); return load() },
		Signals:  signals,
		Debounce: debounce,
	}, zap.New(core))
	require.NoError(t, err)
	require.EqualValues(t, 1, f.loads.Load(), "New loads once when no initial mapping is given")
	f.r = r
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-f.done)
	})
	// Run has set up its watch once it logged so.
	require.Eventually(t, func() bool { return logs.FilterMessage("watching mappings").Len() == 1 }, 5*time.Second, 5*time.Millisecond)
	return f
}

func (f *fixture) write(t *testing.T, doc string) {
	t.Helper()
	require.NoError(t, os.WriteFile(f.path, []byte(doc), 0o600))
}

func versionOf(t *testing.T, doc string) string {
	t.Helper()
	rules, err := DecodeMappings([]byte(doc))
	require.NoError(t, err)
	m, err := crm.CompileMappings(rules, platforms.Targets(destinations))
	require.NoError(t, err)
	return m.Version()
}

func TestValidEditSwaps(t *testing.T) {
	t.Parallel()
	f := setup(t, 20*time.Millisecond, nil)
	before := f.r.Current().Version()
	require.Equal(t, versionOf(t, configDoc("closedwon")), before)

	f.write(t, configDoc("contractsigned"))
	want := versionOf(t, configDoc("contractsigned"))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)

	swapped := f.logs.FilterMessage("mapping reloaded").All()
	require.Len(t, swapped, 1)
	require.Equal(t, before, swapped[0].ContextMap()["old_version"])
	require.Equal(t, want, swapped[0].ContextMap()["new_version"])

	planned, unmatched := f.r.Current().Plan(crm.StageChange{Source: "hubspot", ObjectType: "deal", ObjectID: "1", Stage: "contractsigned"})
	require.False(t, unmatched)
	require.Len(t, planned, 1)
	require.Equal(t, want, planned[0].MappingVersion)
}

func TestRenameOnSaveSwaps(t *testing.T) {
	t.Parallel()
	f := setup(t, 20*time.Millisecond, nil)
	// What vim and most editors do: write a new file, then rename it over the old one.
	tmp := f.path + ".swp"
	require.NoError(t, os.WriteFile(tmp, []byte(configDoc("won-by-rename")), 0o600))
	require.NoError(t, os.Rename(tmp, f.path))
	want := versionOf(t, configDoc("won-by-rename"))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)

	// The watch survives the rename: a second save is seen too.
	f.write(t, configDoc("second-save"))
	want = versionOf(t, configDoc("second-save"))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)
}

func TestBadEditKeepsPrevious(t *testing.T) {
	t.Parallel()
	f := setup(t, 20*time.Millisecond, nil)
	before := f.r.Current()

	f.write(t, invalidDoc)
	require.Eventually(t, func() bool {
		return f.logs.FilterMessage("mapping reload rejected; keeping the active mapping").Len() == 1
	}, 5*time.Second, 5*time.Millisecond)
	require.Same(t, before, f.r.Current())

	var problems []string
	for _, e := range f.logs.FilterMessage("mapping reload: invalid").All() {
		problems = append(problems, e.ContextMap()["problem"].(string))
	}
	require.Equal(t, []string{
		`mappings[0] (won): destinations[0].destination: unknown destination "googel-main" (configured: google-main, meta-main)`,
		`mappings[0] (won): destinations[1].conversion: "abc" must be the numeric Google conversion action id`,
	}, problems)

	// A YAML error (unknown key) is rejected too, and the file being removed as well.
	f.write(t, strings.Replace(configDoc("x"), "match:", "matches:", 1))
	require.Eventually(t, func() bool {
		return f.logs.FilterMessage("mapping reload rejected; keeping the active mapping").Len() == 2
	}, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, os.Remove(f.path))
	require.Eventually(t, func() bool {
		return f.logs.FilterMessage("mapping reload rejected; keeping the active mapping").Len() == 3
	}, 5*time.Second, 5*time.Millisecond)
	require.Same(t, before, f.r.Current())

	// Fixing the file swaps again.
	f.write(t, configDoc("fixed"))
	want := versionOf(t, configDoc("fixed"))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)
}

func TestRapidEditsDebounce(t *testing.T) {
	t.Parallel()
	const debounce = 300 * time.Millisecond
	f := setup(t, debounce, nil)
	for i := range 20 {
		f.write(t, configDoc("stage-"+strings.Repeat("x", i+1)))
	}
	want := versionOf(t, configDoc("stage-"+strings.Repeat("x", 20)))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool { return f.loads.Load() != 2 }, 2*debounce, 10*time.Millisecond,
		"20 quick writes make one load after New's")
}

func TestSignalAndReloadTriggerALoad(t *testing.T) {
	t.Parallel()
	hup := make(chan os.Signal, 1)
	f := setup(t, time.Hour, hup) // file events would wait an hour: only the signal can load

	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return f.loads.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return f.logs.FilterMessage("mapping unchanged").Len() == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "signal hangup", f.logs.FilterMessage("mapping unchanged").All()[0].ContextMap()["trigger"])

	f.write(t, configDoc("after-hup"))
	f.r.Reload()
	want := versionOf(t, configDoc("after-hup"))
	require.Eventually(t, func() bool { return f.r.Current().Version() == want }, 5*time.Second, 5*time.Millisecond)
}

func TestNewFailsOnInvalidInitialMapping(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(invalidDoc), 0o600))
	_, err := New(Config{Path: path, Load: FileLoader(path, platforms.Targets(destinations))}, zap.NewNop())
	require.ErrorContains(t, err, `unknown destination "googel-main"`)
	var me *crm.MappingError
	require.ErrorAs(t, err, &me)

	m, err := crm.CompileMappings(nil, nil)
	require.NoError(t, err)
	r, err := New(Config{Path: path, Load: func() (*crm.Mapping, error) { return nil, errors.New("not called") }, Initial: m}, zap.NewNop())
	require.NoError(t, err)
	require.Same(t, m, r.Current())
}

func TestFlattenKeepsWrapPrefix(t *testing.T) {
	t.Parallel()
	err := errors.Join(errors.New("a"), errors.Join(errors.New("b"), errors.New("c")))
	wrapped := errorsWrap("config x.yaml: ", err)
	var got []string
	for _, e := range flatten(wrapped) {
		got = append(got, e.Error())
	}
	require.Equal(t, []string{"config x.yaml: a", "config x.yaml: b", "config x.yaml: c"}, got)
	require.Equal(t, []string{"plain"}, []string{flatten(errors.New("plain"))[0].Error()})
}

type prefixed struct {
	prefix string
	err    error
}

func (p prefixed) Error() string { return p.prefix + p.err.Error() }
func (p prefixed) Unwrap() error { return p.err }

func errorsWrap(prefix string, err error) error { return prefixed{prefix, err} }

func TestDecodeMappingsIgnoresOtherSections(t *testing.T) {
	t.Parallel()
	rules, err := DecodeMappings([]byte(configDoc("closedwon") + "kafka: {brokers: [a]}\nwhatever: 1\n"))
	require.NoError(t, err)
	require.Len(t, rules, 1)
	require.Equal(t, "won", rules[0].Name)

	_, err = DecodeMappings([]byte("mappings:\n  - name: a\n    stage: x\n"))
	require.ErrorContains(t, err, "line 3: field stage not found")

	rules, err = DecodeMappings(nil)
	require.NoError(t, err)
	require.Empty(t, rules)
}
