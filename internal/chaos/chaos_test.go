package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/report"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/linkedin"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/microsoft"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"
)

// plan is the size of one run.
type plan struct {
	n           int           // valid stage changes, one subject each
	badStages   int           // invalid stage changes
	badIDs      int           // invalid identity captures
	kills       int           // kill -9 of a worker
	killEvery   time.Duration // between kills
	produceOver time.Duration // how long producing takes
	converge    time.Duration // how long everything may take to settle after the faults
}

func planFor(full bool) plan {
	if full {
		return plan{n: 20000, badStages: 200, badIDs: 100, kills: 16, killEvery: 6 * time.Second, produceOver: 80 * time.Second, converge: 6 * time.Minute}
	}
	return plan{n: 2000, badStages: 40, badIDs: 20, kills: 4, killEvery: 5 * time.Second, produceOver: 20 * time.Second, converge: 3 * time.Minute}
}

// Raw PII as it could leak: any address at the generated domain, the raw phone format, and
// E.164 with or without "+" standing alone (not inside a hex hash or a longer number).
var (
	rawEmail = regexp.MustCompile(`(?i)@example\.com`)
	rawPhone = regexp.MustCompile(`\(415\) \d{3}-\d{4}|(^|[^0-9a-fA-F])\+?1415[2-9]\d{6}($|[^0-9a-fA-F])`)
)

func leaks(b []byte) []string {
	var out []string
	for _, re := range []*regexp.Regexp{rawEmail, rawPhone} {
		for _, loc := range re.FindAllIndex(b, 3) {
			lo, hi := max(0, loc[0]-60), min(len(b), loc[1]+60)
			out = append(out, string(b[lo:hi]))
		}
	}
	return out
}

func TestLeakPatterns(t *testing.T) {
	t.Parallel()
	ds := bench.Dataset{Prefix: "x"}
	for _, s := range ds.RawPII(1234) {
		require.NotEmpty(t, leaks([]byte(`{"v":"`+s+`"}`)), "pattern misses %q", s)
	}
	require.Empty(t, leaks([]byte(`"email":"a1415234567890b","t":17641084152345678`)))
}

// TestFaults is the fault suite. See the package doc.
func TestFaults(t *testing.T) {
	t.Parallel()
	p := planFor(os.Getenv("CLOSEDLOOP_CHAOS") == "full")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	root, err := bench.ModuleRoot(ctx)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "closedloop-chaos-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755)) // the PostgreSQL server user must reach its data
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s (worker logs, config)", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	bin, err := bench.Build(ctx, root, dir)
	require.NoError(t, err)
	svc, err := bench.StartServices(ctx, root, filepath.Join(dir, "services"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	const stages, ids, dlq = "chaos.stages", "chaos.identities", "chaos.dead-letters"
	require.NoError(t, bench.CreateTopics(ctx, svc.Brokers[0], 3, stages, ids))
	require.NoError(t, bench.CreateTopics(ctx, svc.Brokers[0], 1, dlq))
	dsn, err := bench.CreateDatabase(ctx, svc.DSN, "chaos")
	require.NoError(t, err)

	sb := platforms.NewSandbox(sandbox.Options{Seed: 8}, zap.NewNop())
	sbURL, err := sb.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sb.Shutdown(context.Background()) })
	faults := sandbox.Faults{Share5xx: 0.1, Share429: 0.1, RetryAfterSeconds: 1, ShareTimeout: 0.05, TimeoutDelayMS: 2500}
	sb.SetFaults(faults)

	cfg := filepath.Join(dir, "closedloop.yaml")
	require.NoError(t, bench.WriteConfig(cfg, bench.WorkerConfig{
		Brokers: svc.Brokers, Group: "chaos", StageTopic: stages, IdentityTopic: ids, DeadLetterTopic: dlq,
		DSN: dsn, Upload: true, SandboxURL: sbURL, Source: "chaos", Destinations: bench.All,
		BatchSize: 200, LeaseFor: 5 * time.Second, PollInterval: 200 * time.Millisecond, Timeout: 1500 * time.Millisecond,
	}))

	ds := bench.Dataset{Source: "chaos", Prefix: "k", Now: time.Now(), AllPlatforms: true}
	sup := newSupervisor(t, bin, cfg, filepath.Join(dir, "logs"))
	sup.want("a", true)
	defer sup.stopAll()

	// Produce while the faults happen.
	var produced atomic.Int64
	prodDone := make(chan error, 1)
	go func() { prodDone <- produce(ctx, svc.Brokers, stages, ids, ds, p, &produced) }()

	// The faults, in order, paced by time.
	total := int64(p.n + p.n/20 + p.badStages)
	waitFor := func(frac float64) {
		for float64(produced.Load()) < frac*float64(total) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	var kafkaRestarts, pgRestarts int
	waitFor(0.1)
	sup.want("b", true) // two workers in one group from here
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < p.kills; k++ {
		time.Sleep(p.killEvery)
		sup.killOne(rng)
		if k == p.kills/3 {
			t.Log("restarting the Kafka broker")
			require.NoError(t, svc.RestartKafka(ctx))
			kafkaRestarts++
		}
		if k == 2*p.kills/3 {
			t.Log("restarting PostgreSQL (immediate: as after a crash)")
			require.NoError(t, svc.RestartPostgres(ctx, "immediate"))
			pgRestarts++
		}
		if k == 3*p.kills/4 {
			sup.want("b", false) // back to one worker
		}
	}
	require.NoError(t, <-prodDone)
	sb.SetFaults(sandbox.Faults{})
	t.Logf("faults over; waiting up to %s for the pipeline to settle", p.converge)

	// Settle: the groups at the end, every expected row accepted.
	want := map[string]string{} // sandbox platform/key → outbox key
	for i := 0; i < p.n; i++ {
		for _, d := range bench.All {
			want[bench.PlatformOf[d]+"|"+ds.SandboxKey(i, d)] = ds.Key(i, d)
		}
	}
	settleCtx, settleCancel := context.WithTimeout(ctx, p.converge)
	defer settleCancel()
	var last string
	for {
		ob, err := bench.ReadOutbox(settleCtx, dsn)
		lagS, errS := bench.GroupLag(settleCtx, svc.Brokers, "chaos", []string{stages})
		lagI, errI := bench.GroupLag(settleCtx, svc.Brokers, "chaos-identities", []string{ids})
		if err == nil && errS == nil && errI == nil {
			last = fmt.Sprintf("outbox %v leased %d; lag stages %d identities %d", ob.ByState, ob.Leased, lagS.Behind, lagI.Behind)
			// Data Manager rows stay sent until the status poll (every 30s, 1,000 rows) turns
			// them accepted; the sandbox counts say whether they arrived.
			if ob.ByState["accepted"]+ob.ByState["sent"] == len(want) && ob.Rows == len(want) && lagS.Behind == 0 && lagI.Behind == 0 && sandboxHas(sb, want) {
				break
			}
		} else {
			last = fmt.Sprint(err, errS, errI)
		}
		select {
		case <-settleCtx.Done():
			t.Fatalf("did not settle within %s: %s\n%s", p.converge, last, sup.report())
		case <-time.After(500 * time.Millisecond):
		}
	}
	sup.stopAll()

	// Every valid conversion accepted exactly once per dedup key; nothing extra.
	counts := sb.Counts()
	var duplicates, lost, extra, resent, faulted int
	seen := map[string]bool{}
	for _, pl := range []string{google.DataManagerName, meta.Name, tiktok.Name, microsoft.Name, linkedin.Name} {
		c := counts[pl]
		faulted += c.Faulted
		t.Logf("sandbox %s: %d requests, %d events received, %d keys, %d faults injected", pl, c.Requests, c.Received, len(c.Keys), c.Faulted)
		for k, kc := range c.Keys {
			seen[pl+"|"+k] = true
			resent += kc.Received - kc.Effective
			if kc.Effective > 1 {
				duplicates++
			}
			if _, ok := want[pl+"|"+k]; !ok {
				extra++
				t.Errorf("sandbox %s counted key %s that no valid stage change produced", pl, k)
			}
		}
	}
	for k := range want {
		pl, key, _ := strings.Cut(k, "|")
		kc := counts[pl].Keys[key]
		if kc == nil || kc.Effective != 1 {
			lost++
			if lost <= 10 {
				t.Errorf("key %s: sandbox count %+v, want effective exactly 1", k, kc)
			}
		}
	}

	// The outbox and the sandbox agree row by row; nothing in flight or leased.
	sandboxKeyOf := make(map[string]string, len(want))
	for sk, key := range want {
		sandboxKeyOf[key] = sk
	}
	rows, err := bench.ReadRows(ctx, dsn)
	require.NoError(t, err)
	require.Len(t, rows, len(want), "outbox rows")
	awaitingPoll := 0
	for _, r := range rows {
		sk := sandboxKeyOf[r.Key]
		if r.State == "sent" && r.Destination == bench.DestGoogle {
			awaitingPoll++ // sent and counted by the sandbox; the status poll has not run yet
		} else {
			require.Equal(t, "accepted", r.State, "row %s (%s) state, reason %q", r.Key, r.Destination, r.Reason)
		}
		require.Contains(t, want, sk, "outbox row %s is not an expected conversion", r.Key)
		require.True(t, seen[sk], "outbox row %s accepted but the sandbox never counted it", r.Key)
	}
	ob, err := bench.ReadOutbox(ctx, dsn)
	require.NoError(t, err)
	require.Zero(t, ob.Leased, "rows still leased")
	require.Zero(t, ob.ByState["in_flight"], "rows in flight")

	// Every invalid message is in the dead-letter topic; no raw PII in its headers.
	dead, err := bench.ReadAll(ctx, svc.Brokers, dlq)
	require.NoError(t, err)
	deadKeys := map[string]bool{}
	for _, m := range dead {
		deadKeys[string(m.Key)] = true
		for _, h := range m.Headers {
			require.Empty(t, leaks(h.Value), "dead-letter header %s of %s carries raw PII", h.Key, m.Key)
		}
	}
	for j := 0; j < p.badStages; j++ {
		require.True(t, deadKeys[ds.BadKey("s", j)], "invalid stage change %s not dead-lettered", ds.BadKey("s", j))
	}
	for j := 0; j < p.badIDs; j++ {
		require.True(t, deadKeys[ds.BadKey("i", j)], "invalid identity capture %s not dead-lettered", ds.BadKey("i", j))
	}

	// The report's stage-change counts are the truth, whatever the kills redelivered: every
	// valid stage-change message in the topic (the planned duplicates and any a retried
	// produce wrote twice included) counted once, all matched by the one rule.
	stageMsgs, err := bench.ReadAll(ctx, svc.Brokers, stages)
	require.NoError(t, err)
	truth := 0
	for _, m := range stageMsgs {
		if !strings.HasPrefix(string(m.Key), "bad-") {
			truth++
		}
	}
	require.GreaterOrEqual(t, truth, p.n+p.n/20)
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn, MaxConns: 2}, zap.NewNop())
	require.NoError(t, err)
	rep, err := report.Build(ctx, st, report.Options{Since: ds.Now.Add(-7 * 24 * time.Hour), Until: time.Now().Add(24 * time.Hour)})
	require.NoError(t, st.Close())
	require.NoError(t, err)
	require.Equal(t, truth, rep.StageTotal, "report: CRM stage changes seen")
	require.Zero(t, rep.StageNoRule, "report: stage changes no rule matched")
	for _, c := range rep.Conversions {
		require.Equal(t, truth, c.Total.Matched, "report: stage changes matched for %s", c.Destination)
	}

	// No raw email or phone in any table or log line.
	dump, err := bench.DumpTables(ctx, dsn)
	require.NoError(t, err)
	require.Contains(t, dump, "identities: ", "the dump reads the identities table")
	require.Empty(t, leaks([]byte(dump)), "raw PII at rest")
	logs, err := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	require.NoError(t, err)
	var logLines int
	for _, f := range logs {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		logLines += bytes.Count(b, []byte{'\n'})
		require.Empty(t, leaks(b), "raw PII in worker log %s", f)
	}

	kills, starts, exits := sup.numbers()
	t.Logf("chaos: %d stage changes (+%d duplicates, %d invalid) and %d identity captures (%d invalid); "+
		"%d conversions accepted exactly once; kill -9 survived %d, worker starts %d, unexpected worker exits %d; "+
		"kafka restarts %d, postgres restarts %d; sandbox faults injected %d, resends deduplicated by the platform %d; "+
		"dead letters %d; report stage changes %d = messages %d; duplicates %d, lost %d, extra %d; %d log lines in %d worker logs checked for raw PII; "+
		"%d Data Manager rows still sent (received by the sandbox, status not polled yet)",
		p.n, p.n/20, p.badStages, p.n, p.badIDs, len(want)-lost, kills, starts, exits, kafkaRestarts, pgRestarts,
		faulted, resent, len(dead), rep.StageTotal, truth, duplicates, lost, extra, logLines, len(logs), awaitingPoll)
	require.Zero(t, duplicates, "duplicates")
	require.Zero(t, lost, "lost")
	require.Zero(t, extra, "extra")
	require.Positive(t, kills)
}

// sandboxHas reports whether the sandbox counted every wanted key at least once.
func sandboxHas(sb *sandbox.Server, want map[string]string) bool {
	c := sb.Counts()
	for k := range want {
		pl, key, _ := strings.Cut(k, "|")
		if kc := c[pl].Keys[key]; kc == nil || kc.Effective == 0 {
			return false
		}
	}
	return true
}

// produce writes identities and stage changes in chunks over p.produceOver: 10% of the
// identities arrive only after their stage changes, every 20th stage change is sent twice,
// and invalid messages are interleaved. A failed write is retried (duplicates are fine).
func produce(ctx context.Context, brokers []string, stages, ids string, ds bench.Dataset, p plan, produced *atomic.Int64) error {
	sw, iw := bench.NewWriter(brokers, stages), bench.NewWriter(brokers, ids)
	defer bench.CloseWriter(sw)
	defer bench.CloseWriter(iw)
	write := func(w *kafka.Writer, msgs []kafka.Message) error {
		for attempt := 0; ; attempt++ {
			err := w.WriteMessages(ctx, msgs...)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil || attempt == 60 {
				return fmt.Errorf("produce to %s: %w", w.Topic, err)
			}
			time.Sleep(time.Second)
		}
	}
	const chunks = 40
	per := (p.n + chunks - 1) / chunks
	var late []kafka.Message
	for c := 0; c < chunks; c++ {
		lo, hi := c*per, min((c+1)*per, p.n)
		var sm, im []kafka.Message
		for i := lo; i < hi; i++ {
			if i%10 == 3 {
				late = append(late, ds.Identity(i))
			} else {
				im = append(im, ds.Identity(i))
			}
			sm = append(sm, ds.StageChange(i))
			if i%20 == 7 {
				sm = append(sm, ds.StageChange(i))
			}
		}
		for j := c * p.badStages / chunks; j < (c+1)*p.badStages/chunks; j++ {
			sm = append(sm, ds.BadStageChange(j))
		}
		for j := c * p.badIDs / chunks; j < (c+1)*p.badIDs/chunks; j++ {
			im = append(im, ds.BadIdentity(j))
		}
		if err := write(iw, im); err != nil {
			return err
		}
		if err := write(sw, sm); err != nil {
			return err
		}
		produced.Add(int64(len(sm)))
		time.Sleep(p.produceOver / chunks)
	}
	return write(iw, late)
}

// supervisor keeps the wanted worker slots running, as a process manager would: a worker
// that exits (killed by the test or not) is started again.
type supervisor struct {
	t        *testing.T
	bin, cfg string
	logDir   string

	mu      sync.Mutex
	slots   map[string]*slot
	kills   int
	starts  int
	exits   int // exits the test did not cause
	exitLog []string
	stop    chan struct{}
	done    chan struct{}
}

type slot struct {
	wanted bool
	w      *bench.Worker
	killed bool
	n      int
}

func newSupervisor(t *testing.T, bin, cfg, logDir string) *supervisor {
	require.NoError(t, os.MkdirAll(logDir, 0o755))
	s := &supervisor{t: t, bin: bin, cfg: cfg, logDir: logDir, slots: map[string]*slot{}, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *supervisor) want(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[name]
	if sl == nil {
		sl = &slot{}
		s.slots[name] = sl
	}
	sl.wanted = on
	if !on && sl.w != nil {
		w := sl.w
		sl.killed = true
		go func() { _ = w.Stop(30 * time.Second) }()
	}
}

// killOne sends SIGKILL to one running worker, chosen at random.
func (s *supervisor) killOne(rng *rand.Rand) {
	s.mu.Lock()
	var names []string
	for n, sl := range s.slots {
		if sl.w != nil && sl.wanted {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		s.mu.Unlock()
		return
	}
	sl := s.slots[names[rng.IntN(len(names))]]
	w := sl.w
	sl.killed = true
	s.kills++
	s.mu.Unlock()
	w.Kill()
}

func (s *supervisor) loop() {
	defer close(s.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		for name, sl := range s.slots {
			if sl.w != nil {
				select {
				case <-sl.w.Done():
					if !sl.killed {
						s.exits++
						s.exitLog = append(s.exitLog, fmt.Sprintf("worker %s#%d exited on its own: %v (log %s; last line: %s)",
							name, sl.n, sl.w.Err(), s.logPath(name, sl.n), lastLine(s.logPath(name, sl.n))))
						s.t.Logf("%s", s.exitLog[len(s.exitLog)-1])
					}
					sl.w, sl.killed = nil, false
				default:
				}
			}
			if sl.wanted && sl.w == nil {
				sl.n++
				w, err := bench.StartWorker(s.bin, s.cfg, s.logPath(name, sl.n))
				if err != nil {
					s.t.Errorf("start worker %s: %v", name, err)
					continue
				}
				sl.w = w
				s.starts++
			}
		}
		s.mu.Unlock()
	}
}

func (s *supervisor) logPath(name string, n int) string {
	return filepath.Join(s.logDir, fmt.Sprintf("worker-%s-%02d.log", name, n))
}

// stopAll stops supervising and stops every worker with SIGTERM. Idempotent.
func (s *supervisor) stopAll() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, sl := range s.slots {
		if sl.w != nil {
			if err := sl.w.Stop(30 * time.Second); err != nil {
				s.t.Errorf("worker %s did not stop cleanly: %v", name, err)
			}
			sl.w = nil
		}
	}
}

func (s *supervisor) numbers() (kills, starts, exits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kills, s.starts, s.exits
}

func (s *supervisor) report() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("kills %d, starts %d, unexpected exits %d\n%s", s.kills, s.starts, s.exits, strings.Join(s.exitLog, "\n"))
}

// lastLine is the last line of the file at path (a worker's log: why it exited), cut to
// 300 bytes, or what kept it from being read.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	last := lines[len(lines)-1]
	if len(last) > 300 {
		last = last[:300] + "..."
	}
	return last
}
