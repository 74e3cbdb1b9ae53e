package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"

	"go.uber.org/zap"
)

type options struct {
	N, Partitions, UploadN int
	Out, MD, Bin, WorkDir  string
	Pprof                  string
	Only                   string
	WorkerPprof            bool
	WorkerLog              string
	CatchMax               int
	Timeout                time.Duration
	Brokers                []string
	AdminDSN               string
}

// env is one run's names and places.
type env struct {
	o       options
	bin     string
	dir     string
	run     string
	dsn     string // the main benchmark database
	upDSN   string // the upload benchmark database
	ds      bench.Dataset
	dsSmall bench.Dataset // same contacts, other deals: the 100k RSS run
	dsUp    bench.Dataset
	smallN  int
	topics  struct{ ids, stages, small, idsUp, stagesUp, empty, dlq, ingest, ingestRaw string }
	res     *Results
}

func run(ctx context.Context, o options) error {
	e := &env{o: o, run: time.Now().UTC().Format("0102150405"), res: &Results{N: o.N, UploadN: o.UploadN, Started: time.Now().UTC()}}
	e.smallN = min(o.N, 100_000)
	var err error
	e.dir = o.WorkDir
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "clbench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return err
	}
	logf("work dir %s (configs, worker logs)", e.dir)
	e.bin = o.Bin
	if e.bin == "" {
		root, err := bench.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		logf("building cmd/closedloop")
		if e.bin, err = bench.Build(ctx, root, e.dir); err != nil {
			return err
		}
	}
	e.res.Machine = machine(ctx, o.AdminDSN)
	now := time.Now()
	e.ds = bench.Dataset{Source: "bench", Prefix: "b", Now: now}
	e.dsSmall = bench.Dataset{Source: "bench", Prefix: "b", DealTag: "s", Now: now}
	e.dsUp = bench.Dataset{Source: "bench", Prefix: "u", Now: now, AllPlatforms: true}
	t := &e.topics
	p := "clbench-" + e.run + "-"
	t.ids, t.stages, t.small, t.idsUp, t.stagesUp, t.empty, t.dlq = p+"ids", p+"stages", p+"stages-small", p+"ids-up", p+"stages-up", p+"empty", p+"dlq"
	t.ingest, t.ingestRaw = p+"ingest", p+"ingest-raw"
	if err := bench.CreateTopics(ctx, o.Brokers[0], o.Partitions, t.ids, t.stages, t.small, t.idsUp, t.stagesUp, t.empty, t.dlq, t.ingest, t.ingestRaw); err != nil {
		return err
	}
	if e.dsn, err = bench.CreateDatabase(ctx, o.AdminDSN, "clbench_"+e.run); err != nil {
		return err
	}
	if e.upDSN, err = bench.CreateDatabase(ctx, o.AdminDSN, "clbench_"+e.run+"_up"); err != nil {
		return err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = bench.DropDatabase(c, o.AdminDSN, "clbench_"+e.run)
		_ = bench.DropDatabase(c, o.AdminDSN, "clbench_"+e.run+"_up")
		deleteTopics(c, o.Brokers[0], t.ids, t.stages, t.small, t.idsUp, t.stagesUp, t.empty, t.dlq, t.ingest, t.ingestRaw)
	}()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"produce", e.produce},
		{"warm-up", e.warmUp},
		{"identity ingest (closedloop)", e.identityIngest},
		{"identity insert (raw)", e.rawIdentityInsert},
		{"end to end, small backlog", e.endToEndSmall},
		{"end to end", e.endToEnd},
		{"kafka read (raw)", e.rawRead},
		{"outbox insert (raw)", e.rawOutboxInsert},
		{"replay", e.replay},
		{"uploads", e.uploads},
		{"ingest webhooks", e.ingestWebhooks},
		{"enrichment", e.enrichment},
		{"catch-up, both topics backlogged", e.catchUp},
	}
	for _, s := range steps {
		if o.Only != "" && s.name != "produce" && s.name != "warm-up" && !strings.Contains(s.name, o.Only) {
			continue
		}
		if err := e.settle(ctx); err != nil {
			return fmt.Errorf("before %s: %w", s.name, err)
		}
		logf("== %s", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	e.res.finish()
	table := e.res.Table()
	fmt.Println(table)
	if o.Out != "" {
		b, _ := json.MarshalIndent(e.res, "", "  ")
		if err := writeFile(o.Out, append(b, '\n')); err != nil {
			return err
		}
	}
	if o.MD != "" {
		if err := writeFile(o.MD, []byte(e.res.Markdown())); err != nil {
			return err
		}
	}
	if err := e.profileEndToEnd(ctx); err != nil {
		return fmt.Errorf("profile (results already written): %w", err)
	}
	if e.o.WorkDir == "" {
		_ = os.RemoveAll(e.dir)
	}
	return nil
}

func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s clbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func deleteTopics(ctx context.Context, broker string, topics ...string) {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return
	}
	defer conn.Close()
	c, err := conn.Controller()
	if err != nil {
		return
	}
	ctrl, err := kafka.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", c.Host, c.Port))
	if err != nil {
		return
	}
	defer ctrl.Close()
	_ = ctrl.DeleteTopics(topics...)
}

func (e *env) produce(ctx context.Context) error {
	n, t := e.o.N, e.topics
	start := time.Now()
	if err := bench.Produce(ctx, e.o.Brokers, t.ids, 0, n, e.ds.Identity); err != nil {
		return err
	}
	e.res.ProduceIdentities = rate(n, time.Since(start))
	start = time.Now()
	if err := bench.Produce(ctx, e.o.Brokers, t.stages, 0, n, e.ds.StageChange); err != nil {
		return err
	}
	e.res.ProduceStages = rate(n, time.Since(start))
	logf("produced %d identities at %.0f/s, %d stage changes at %.0f/s", n, e.res.ProduceIdentities.PerSecond, n, e.res.ProduceStages.PerSecond)
	if err := bench.Produce(ctx, e.o.Brokers, t.small, 0, e.smallN, e.dsSmall.StageChange); err != nil {
		return err
	}
	if err := bench.Produce(ctx, e.o.Brokers, t.idsUp, 0, e.o.UploadN, e.dsUp.Identity); err != nil {
		return err
	}
	return bench.Produce(ctx, e.o.Brokers, t.stagesUp, 0, e.o.UploadN, e.dsUp.StageChange)
}

// settle brings the database to the same quiet state before every timed step: it
// vacuums and analyzes the run's databases (so autovacuum does not start on the tables
// the previous step filled while the next one is timed) and checkpoints. Without it, a
// raw COPY timed right after a million-row ingestion could share the cores with
// autovacuum, and its rate varied by a third from run to run.
func (e *env) settle(ctx context.Context, more ...string) error {
	for _, dsn := range append([]string{e.dsn, e.upDSN}, more...) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "VACUUM (ANALYZE)")
		conn.Close(ctx)
		if err != nil {
			return err
		}
	}
	conn, err := pgx.Connect(ctx, e.o.AdminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CHECKPOINT")
	return err
}

// config writes a worker config for this run and returns its path.
func (e *env) config(name string, c bench.WorkerConfig) (string, error) {
	c.Brokers = e.o.Brokers
	c.Source = "bench"
	c.Pprof = e.o.WorkerPprof
	if c.LogLevel == "" {
		c.LogLevel = e.o.WorkerLog
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = e.topics.dlq
	}
	path := filepath.Join(e.dir, name+".yaml")
	return path, bench.WriteConfig(path, c)
}

// timedWorker starts a worker on cfg and waits until group has committed the end of
// topics; it returns the time from start, and the worker still running.
func (e *env) timedWorker(ctx context.Context, name, cfg, group string, topics []string) (time.Duration, *bench.Worker, error) {
	start := time.Now()
	w, err := bench.StartWorker(e.bin, cfg, filepath.Join(e.dir, name+".log"))
	if err != nil {
		return 0, nil, err
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.Done():
			cancel()
		case <-waitCtx.Done():
		}
	}()
	if err := bench.WaitCaughtUp(waitCtx, e.o.Brokers, group, topics, 100*time.Millisecond); err != nil {
		select {
		case <-w.Done():
			return 0, nil, fmt.Errorf("worker exited (%v) before catching up; log: %s", w.Err(), filepath.Join(e.dir, name+".log"))
		default:
		}
		w.Kill()
		return 0, nil, err
	}
	return time.Since(start), w, nil
}

func (e *env) mainConfig(name, stageTopic string) (string, error) {
	return e.config(name, bench.WorkerConfig{
		Group: "clbench-main", StageTopic: stageTopic, IdentityTopic: e.topics.ids,
		DSN: e.dsn, Destinations: []string{bench.DestGoogle},
	})
}

func (e *env) identityIngest(ctx context.Context) error {
	cfg, err := e.mainConfig("identities", e.topics.empty)
	if err != nil {
		return err
	}
	d, w, err := e.timedWorker(ctx, "identities", cfg, "clbench-main-identities", []string{e.topics.ids})
	if err != nil {
		return err
	}
	if err := w.Stop(30 * time.Second); err != nil {
		return err
	}
	e.res.IdentityIngest = rate(e.o.N, d)
	logf("closedloop ingested %d identity captures in %.1fs: %.0f/s", e.o.N, d.Seconds(), e.res.IdentityIngest.PerSecond)
	return nil
}

func (e *env) endToEndSmall(ctx context.Context) error {
	cfg, err := e.mainConfig("e2e-small", e.topics.small)
	if err != nil {
		return err
	}
	d, w, err := e.timedWorker(ctx, "e2e-small", cfg, "clbench-main", []string{e.topics.small})
	if err != nil {
		return err
	}
	rss, rerr := w.PeakRSS()
	if err := w.Stop(30 * time.Second); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	e.res.EndToEndSmall = rate(e.smallN, d)
	e.res.PeakRSSSmall = rss
	logf("end to end %d in %.1fs: %.0f/s, peak RSS %d MiB", e.smallN, d.Seconds(), e.res.EndToEndSmall.PerSecond, rss>>20)
	return nil
}

func (e *env) endToEnd(ctx context.Context) error {
	cfg, err := e.mainConfig("e2e", e.topics.stages)
	if err != nil {
		return err
	}
	before, err := bench.ReadOutbox(ctx, e.dsn)
	if err != nil {
		return err
	}
	d, w, err := e.timedWorker(ctx, "e2e", cfg, "clbench-main", []string{e.topics.stages})
	if err != nil {
		return err
	}
	rss, rerr := w.PeakRSS()
	if err := w.Stop(30 * time.Second); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	after, err := bench.ReadOutbox(ctx, e.dsn)
	if err != nil {
		return err
	}
	if got := after.Rows - before.Rows; got != e.o.N {
		return fmt.Errorf("end to end created %d outbox rows, want %d", got, e.o.N)
	}
	if after.ByState["ready"] != after.Rows {
		return fmt.Errorf("outbox states %v: every row should be ready (joined)", after.ByState)
	}
	e.res.EndToEnd = rate(e.o.N, d)
	e.res.PeakRSS = rss
	logf("end to end %d in %.1fs: %.0f/s, peak RSS %d MiB", e.o.N, d.Seconds(), e.res.EndToEnd.PerSecond, rss>>20)
	return nil
}

// rawRead is a plain kafka-go group consumer: FetchMessage, CommitMessages every 1000.
func (e *env) rawRead(ctx context.Context) error {
	start := time.Now()
	if err := e.groupRead(ctx, "clbench-raw-"+e.run, e.topics.stages, e.o.N); err != nil {
		return err
	}
	e.res.RawRead = rate(e.o.N, time.Since(start))
	logf("raw read %d in %.1fs: %.0f/s", e.o.N, e.res.RawRead.Seconds, e.res.RawRead.PerSecond)
	return nil
}

// warmUp reads the identity topic once, untimed, before anything is measured: a fresh
// broker's JVM compiles its fetch path during its first seconds of reads, and without
// this the first measured step (identity ingestion) ran ~20% slower than the same step
// run again on the same services.
func (e *env) warmUp(ctx context.Context) error {
	start := time.Now()
	if err := e.groupRead(ctx, "clbench-warmup-"+e.run, e.topics.ids, e.o.N); err != nil {
		return err
	}
	logf("warm-up read of %d identity captures in %.1fs (not a result)", e.o.N, time.Since(start).Seconds())
	return nil
}

// groupRead reads n messages of topic in consumer group group, committing every 1,000,
// as a plain consumer would, with the worker's fetch settings.
func (e *env) groupRead(ctx context.Context, group, topic string, n int) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.o.Brokers, GroupID: group, GroupTopics: []string{topic},
		StartOffset: kafka.FirstOffset, QueueCapacity: 1000, MinBytes: 1, MaxBytes: 16 << 20,
		MaxWait: 100 * time.Millisecond, CommitInterval: 0,
	})
	defer r.Close()
	batch := make([]kafka.Message, 0, 1000)
	for read := 0; read < n; {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		read++
		batch = append(batch, m)
		if len(batch) == cap(batch) || read == n {
			if err := r.CommitMessages(ctx, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// copyBatches inserts n rows made by row into table with one COPY per 1000 rows, each in
// its own transaction (as the consumer writes one transaction per batch).
func copyBatches(ctx context.Context, conn *pgx.Conn, table string, cols []string, n int, row func(i int) []any) error {
	const size = 1000
	buf := make([][]any, 0, size)
	for i := 0; i < n; i++ {
		buf = append(buf, row(i))
		if len(buf) == size || i == n-1 {
			tx, err := conn.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(buf)); err != nil {
				_ = tx.Rollback(ctx)
				return fmt.Errorf("copy into %s: %w", table, err)
			}
			if err := tx.Commit(ctx); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

// rawOutboxInsert copies N rows shaped like real outbox rows (the identity snapshot and
// subject keys of a real row) into a copy of the conversions table with its indexes.
func (e *env) rawOutboxInsert(ctx context.Context) error {
	r, err := rawOutboxCopy(ctx, e.dsn, e.ds, e.o.N, []string{bench.DestGoogle})
	if err != nil {
		return err
	}
	e.res.RawInsert = r
	logf("raw outbox insert %d in %.1fs: %.0f/s", e.o.N, r.Seconds, r.PerSecond)
	return nil
}

// rawIdentityInsert copies N identities and their 2 clicks each, shaped like stored ones.
func (e *env) rawIdentityInsert(ctx context.Context) error {
	r, err := rawIdentityCopy(ctx, e.dsn, e.ds, e.o.N)
	if err != nil {
		return err
	}
	e.res.RawIdentityInsert = r
	logf("raw identity insert %d in %.1fs: %.0f/s", e.o.N, r.Seconds, r.PerSecond)
	return nil
}

// rawIdentityCopy copies the identities of subjects 0..n-1 of ds and their 2 clicks each,
// shaped like dsn's first stored identity, into copies of the tables with their indexes,
// one transaction per 1,000 captures (as the identity consumer writes them).
func rawIdentityCopy(ctx context.Context, dsn string, ds bench.Dataset, n int) (Rate, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Rate{}, err
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		"CREATE TABLE raw_identities (LIKE identities INCLUDING ALL)",
		"CREATE TABLE raw_clicks (LIKE clicks INCLUDING ALL)",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return Rate{}, err
		}
	}
	defer conn.Exec(context.WithoutCancel(ctx), "DROP TABLE raw_identities, raw_clicks")
	var identifiers, stamps, consentData, consentPers string
	var consentAt time.Time
	if err := conn.QueryRow(ctx, "SELECT identifiers::text, stamps::text, consent_ad_user_data, consent_ad_personalization, consent_captured_at FROM identities LIMIT 1").
		Scan(&identifiers, &stamps, &consentData, &consentPers, &consentAt); err != nil {
		return Rate{}, fmt.Errorf("sample identity row: %w", err)
	}
	now := time.Now()
	start := time.Now()
	const size = 1000
	for lo := 0; lo < n; lo += size {
		hi := min(lo+size, n)
		tx, err := conn.Begin(ctx)
		if err != nil {
			return Rate{}, err
		}
		ids := make([][]any, 0, hi-lo)
		clicks := make([][]any, 0, 2*(hi-lo))
		for i := lo; i < hi; i++ {
			sk := ds.Source + ":contact:" + ds.ContactID(i)
			ids = append(ids, []any{sk, identifiers, stamps, consentData, consentPers, consentAt, now})
			clicks = append(clicks, []any{sk, "gclid", "Cj0KCQbench" + ds.Prefix + fmt.Sprint(i), consentAt}, []any{sk, "ttclid", "E.C.P.bench" + ds.Prefix + fmt.Sprint(i), consentAt})
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"raw_identities"}, []string{"subject_key", "identifiers", "stamps", "consent_ad_user_data", "consent_ad_personalization", "consent_captured_at", "updated_at"}, pgx.CopyFromRows(ids)); err != nil {
			_ = tx.Rollback(ctx)
			return Rate{}, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"raw_clicks"}, []string{"subject_key", "type", "id", "clicked_at"}, pgx.CopyFromRows(clicks)); err != nil {
			_ = tx.Rollback(ctx)
			return Rate{}, err
		}
		if err := tx.Commit(ctx); err != nil {
			return Rate{}, err
		}
	}
	return rate(n, time.Since(start)), nil
}

// replay replays the whole main stage topic (all already processed) with `closedloop replay`.
func (e *env) replay(ctx context.Context) error {
	cfg, err := e.mainConfig("replay", e.topics.stages)
	if err != nil {
		return err
	}
	before, err := bench.ReadOutbox(ctx, e.dsn)
	if err != nil {
		return err
	}
	logPath := filepath.Join(e.dir, "replay.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, e.bin, "replay", "--config", cfg, "--from", "2000-01-01", "--topic", e.topics.stages, "--json")
	cmd.Stderr = logFile
	start := time.Now()
	out, err := cmd.Output()
	d := time.Since(start)
	if err != nil {
		return fmt.Errorf("closedloop replay: %w (log %s)", err, logPath)
	}
	after, err := bench.ReadOutbox(ctx, e.dsn)
	if err != nil {
		return err
	}
	var peak int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		peak = ru.Maxrss * 1024
	}
	e.res.Replay = ReplayResult{Messages: e.o.N, Seconds: d.Seconds(), RowsCreated: after.Rows - before.Rows, PeakRSS: peak, Summary: json.RawMessage(strings.TrimSpace(string(out)))}
	if !json.Valid(e.res.Replay.Summary) {
		e.res.Replay.Summary = nil
	}
	logf("replay of %d in %.1fs, %d rows created, peak RSS %d MiB", e.o.N, d.Seconds(), after.Rows-before.Rows, peak>>20)
	return nil
}

// uploads fills a second outbox (uploader off), then uploads it to the in-process sandbox.
func (e *env) uploads(ctx context.Context) error {
	u := e.o.UploadN
	want := len(bench.All) * u
	fill, err := e.config("upload-fill", bench.WorkerConfig{
		Group: "clbench-up", StageTopic: e.topics.stagesUp, IdentityTopic: e.topics.idsUp, DSN: e.upDSN,
		Destinations: bench.All,
	})
	if err != nil {
		return err
	}
	_, w, err := e.timedWorker(ctx, "upload-fill", fill, "clbench-up", []string{e.topics.stagesUp})
	if err != nil {
		return err
	}
	if err := bench.WaitCaughtUp(ctx, e.o.Brokers, "clbench-up-identities", []string{e.topics.idsUp}, 100*time.Millisecond); err != nil {
		return err
	}
	for {
		ob, err := bench.ReadOutbox(ctx, e.upDSN)
		if err != nil {
			return err
		}
		if ob.ByState["ready"] == want {
			break
		}
		if ob.Rows == want && ob.ByState["awaiting_identity"] == 0 && ob.ByState["ready"] != want {
			return fmt.Errorf("upload backlog states %v, want %d ready", ob.ByState, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := w.Stop(30 * time.Second); err != nil {
		return err
	}
	sb := platforms.NewSandbox(sandbox.Options{Seed: 1}, zap.NewNop())
	url, err := sb.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sb.Shutdown(context.WithoutCancel(ctx))
	up, err := e.config("upload", bench.WorkerConfig{
		Group: "clbench-up", StageTopic: e.topics.stagesUp, IdentityTopic: e.topics.idsUp, DSN: e.upDSN,
		Upload: true, SandboxURL: url, Destinations: bench.All,
	})
	if err != nil {
		return err
	}
	start := time.Now()
	w, err = bench.StartWorker(e.bin, up, filepath.Join(e.dir, "upload.log"))
	if err != nil {
		return err
	}
	defer w.Stop(30 * time.Second)
	var received time.Duration
	deadline := time.Now().Add(10 * time.Minute)
	lastLog := time.Now()
	for {
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			ob, _ := bench.ReadOutbox(ctx, e.upDSN)
			c := sb.Counts()
			var per []string
			for _, d := range bench.All {
				p := c[bench.PlatformOf[d]]
				per = append(per, fmt.Sprintf("%s %d (requests %d, faulted %d, refused %d)", bench.PlatformOf[d], p.AcceptedUnique, p.Requests, p.Faulted, p.Refused))
			}
			logf("uploading: outbox %v; sandbox accepted %s", ob.ByState, strings.Join(per, ", "))
		}
		c := sb.Counts()
		total := 0
		for _, d := range bench.All {
			total += c[bench.PlatformOf[d]].AcceptedUnique
		}
		if received == 0 && total >= want {
			received = time.Since(start)
		}
		if received > 0 {
			ob, err := bench.ReadOutbox(ctx, e.upDSN)
			if err != nil {
				return err
			}
			// Data Manager rows stay sent until the status poll (30s period) turns them
			// accepted: that lag is not upload throughput, so the run ends here.
			if ob.ByState["ready"] == 0 && ob.ByState["in_flight"] == 0 && ob.ByState["accepted"]+ob.ByState["sent"] == want {
				break
			}
		}
		select {
		case <-w.Done():
			return fmt.Errorf("upload worker exited: %v", w.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("uploads did not finish in 10 minutes")
		}
	}
	rss, _ := w.PeakRSS()
	c := sb.Counts()
	e.res.Uploads = UploadResult{Rows: want, Seconds: received.Seconds(), PerSecond: float64(want) / received.Seconds(), PeakRSS: rss, Fill: map[string]Fill{}}
	for _, d := range bench.All {
		p := bench.PlatformOf[d]
		spec, _ := platforms.Lookup(p)
		max := spec.MaxBatch
		f := Fill{Requests: c[p].Requests, Events: c[p].Received, Max: max}
		if f.Requests > 0 {
			f.Mean = float64(f.Events) / float64(f.Requests) / float64(max)
		}
		e.res.Uploads.Fill[p] = f
	}
	logf("uploaded %d rows in %.1fs: %.0f/s; fill %v", want, received.Seconds(), e.res.Uploads.PerSecond, e.res.Uploads.Fill)
	return nil
}
