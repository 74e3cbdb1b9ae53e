package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/uploader/google"
	"github.com/closedloop/closedloop/uploader/meta"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
	"github.com/closedloop/closedloop/uploader/tiktok"

	"go.uber.org/zap"
)

// The catch-up case is a day of downtime: both topics hold a backlog when the workers
// start, the identity captures produced first (as a relay would), then the stage changes
// with re-sent duplicates and some garbage. The workers start on a fresh database, with
// one rule sending closed-won to three destinations and the uploader off, and the clock
// runs until both consumer groups have committed the end of their topics.
const catchPartitions = 6

// catchPlan is the stage-change topic of the catch-up case: every 21st message re-sends
// the deal 20 messages before it (a relay's retry: same key, same body), and garbage
// follows the deals.
type catchPlan struct {
	ds      bench.Dataset
	n       int // distinct deals (and identity captures)
	dups    int
	garbage int
}

func newCatchPlan(ds bench.Dataset, n int) catchPlan {
	p := catchPlan{ds: ds, n: n, garbage: max(4, n/1370)}
	p.dups = n / 20
	return p
}

// messages is the number of stage-change messages.
func (p catchPlan) messages() int { return p.n + p.dups + p.garbage }

// stage is the m-th stage-change message.
func (p catchPlan) stage(m int) kafka.Message {
	if m >= p.n+p.dups {
		return p.ds.BadStageChange(m - p.n - p.dups)
	}
	block, at := m/21, m%21
	if at == 20 {
		return p.ds.StageChange(block * 20)
	}
	return p.ds.StageChange(block*20 + at)
}

// CatchUpResult is the catch-up case: one run per instance count, and the raw ceilings.
type CatchUpResult struct {
	Identities   int          `json:"identities"`
	Messages     int          `json:"stage_messages"`
	Duplicates   int          `json:"duplicates"`
	Garbage      int          `json:"garbage"`
	Destinations int          `json:"destinations"`
	Partitions   int          `json:"partitions"`
	RawRead      Rate         `json:"raw_kafka_read"`
	RawInsert    Rate         `json:"raw_outbox_insert"` // rows, not stage changes
	Ceiling      float64      `json:"ceiling_per_second"`
	RawIdentity  Rate         `json:"raw_identity_insert"`
	Runs         []CatchUpRun `json:"runs"`
	// Quota is one upload window per instance count with every destination's
	// rate_per_second set: the requests the sandbox received per second.
	Quota []QuotaRun `json:"quota"`
}

// QuotaRun is k instances uploading the caught-up outbox for a while, every destination
// limited to Limit requests per second (a cluster-wide quota): what the sandbox saw.
type QuotaRun struct {
	Instances int                `json:"instances"`
	Limit     float64            `json:"limit_per_second"`
	Seconds   float64            `json:"seconds"`
	PerSecond map[string]float64 `json:"requests_per_second"` // by platform
}

// quotaLimit and quotaWindow pace the quota check: a few requests a second per
// destination, counted over a window long enough for the bucket's burst not to matter.
const (
	quotaLimit  = 1
	quotaWindow = 20 * time.Second
)

// CatchUpRun is one catch-up with some instances in one consumer group.
type CatchUpRun struct {
	Instances     int     `json:"instances"`
	Identities    Rate    `json:"identities"`    // until the identity group committed the end
	Stages        Rate    `json:"stage_changes"` // messages, until the stage group committed the end
	StageRatio    float64 `json:"stage_ratio"`   // to the raw ceiling
	IdentityRatio float64 `json:"identity_ratio"`
	PeakRSS       int64   `json:"peak_rss_bytes"` // the largest instance's
	CPU           float64 `json:"cpu_cores"`      // the instances' CPU seconds per wall second
	Rows          int     `json:"rows"`
	Ready         int     `json:"ready"`
	DeadLetters   int64   `json:"dead_letters"`
	// Released counts rows written awaiting identity and released by a later join: each
	// such row is written twice.
	Released int `json:"released_after_waiting"`
}

func (e *env) catchTopics() (ids, stages string) {
	p := "clbench-" + e.run + "-catch-"
	return p + "ids", p + "stages"
}

// catchUp runs the catch-up case with 1, 2 and 3 instances, each on a fresh database and
// in a fresh consumer group over the same two topics, and the raw ceilings beside them.
func (e *env) catchUp(ctx context.Context) error {
	ds := bench.Dataset{Source: "bench", Prefix: "c", Now: e.ds.Now}
	plan := newCatchPlan(ds, e.o.N)
	ids, stages := e.catchTopics()
	res := &e.res.CatchUp
	*res = CatchUpResult{Identities: plan.n, Messages: plan.messages(), Duplicates: plan.dups, Garbage: plan.garbage, Destinations: 3, Partitions: catchPartitions}
	if err := bench.CreateTopics(ctx, e.o.Brokers[0], catchPartitions, ids, stages); err != nil {
		return err
	}
	defer deleteTopics(context.WithoutCancel(ctx), e.o.Brokers[0], ids, stages)
	start := time.Now()
	if err := bench.Produce(ctx, e.o.Brokers, ids, 0, plan.n, ds.Identity); err != nil {
		return err
	}
	if err := bench.Produce(ctx, e.o.Brokers, stages, 0, plan.messages(), plan.stage); err != nil {
		return err
	}
	logf("catch-up: produced %d identity captures and %d stage changes (%d duplicates, %d garbage) in %.1fs",
		plan.n, plan.messages(), plan.dups, plan.garbage, time.Since(start).Seconds())

	for k := 1; k <= e.o.CatchMax; k++ {
		if err := e.settle(ctx); err != nil {
			return err
		}
		run, dsn, err := e.catchRun(ctx, plan, k)
		if err != nil {
			return fmt.Errorf("%d instance(s): %w", k, err)
		}
		if k == 1 {
			// The raw ceilings run on the first run's database, shaped like its rows, once
			// it is vacuumed (autovacuum would otherwise share the cores with the COPY).
			if err := e.settle(ctx, dsn); err != nil {
				return err
			}
			if err := e.catchCeiling(ctx, plan, dsn, stages); err != nil {
				return err
			}
		}
		res.Runs = append(res.Runs, run)
		_ = bench.DropDatabase(context.WithoutCancel(ctx), e.o.AdminDSN, catchDB(e.run, k))
	}
	for i := range res.Runs {
		r := &res.Runs[i]
		if res.Ceiling > 0 {
			r.StageRatio = r.Stages.PerSecond / res.Ceiling
		}
		if res.RawIdentity.PerSecond > 0 {
			r.IdentityRatio = r.Identities.PerSecond / res.RawIdentity.PerSecond
		}
	}
	return nil
}

func catchDB(run string, k int) string { return fmt.Sprintf("clbench_%s_catch%d", run, k) }

// catchRun starts k workers in one group on a fresh database and waits until both groups
// have committed the end of their topics; it checks the outbox and the dead letters.
func (e *env) catchRun(ctx context.Context, plan catchPlan, k int) (CatchUpRun, string, error) {
	run := CatchUpRun{Instances: k}
	ids, stages := e.catchTopics()
	dsn, err := bench.CreateDatabase(ctx, e.o.AdminDSN, catchDB(e.run, k))
	if err != nil {
		return run, "", err
	}
	dlq := fmt.Sprintf("clbench-%s-catch-dlq%d", e.run, k)
	if err := bench.CreateTopics(ctx, e.o.Brokers[0], 1, dlq); err != nil {
		return run, dsn, err
	}
	defer deleteTopics(context.WithoutCancel(ctx), e.o.Brokers[0], dlq)
	group := fmt.Sprintf("clbench-catch%d", k)
	cfg, err := e.config(fmt.Sprintf("catch%d", k), bench.WorkerConfig{
		Group: group, StageTopic: stages, IdentityTopic: ids, DeadLetterTopic: dlq, DSN: dsn,
	})
	if err != nil {
		return run, dsn, err
	}
	// The first worker migrates the fresh database; the others start once it is up, as a
	// rolling deploy would.
	start := time.Now()
	workers := make([]*bench.Worker, 0, k)
	defer func() {
		for _, w := range workers {
			w.Kill()
		}
	}()
	for i := 0; i < k; i++ {
		w, err := bench.StartWorker(e.bin, cfg, filepath.Join(e.dir, fmt.Sprintf("catch%d-%d.log", k, i)))
		if err != nil {
			return run, dsn, err
		}
		workers = append(workers, w)
		if i == 0 && k > 1 {
			if _, err := w.Admin(ctx); err != nil {
				return run, dsn, err
			}
		}
	}
	type done struct {
		what string
		d    time.Duration
		err  error
	}
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	results := make(chan done, 2)
	for _, g := range []struct{ what, group, topic string }{{"identities", group + "-identities", ids}, {"stages", group, stages}} {
		go func() {
			err := bench.WaitCaughtUp(waitCtx, e.o.Brokers, g.group, []string{g.topic}, 100*time.Millisecond)
			results <- done{g.what, time.Since(start), err}
		}()
	}
	var peak int64
	sampleRSS := func() {
		for _, w := range workers {
			if rss, err := w.PeakRSS(); err == nil {
				peak = max(peak, rss)
			}
		}
	}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil {
				return run, dsn, fmt.Errorf("%s: %w (logs in %s)", r.what, r.err, e.dir)
			}
			if r.what == "identities" {
				run.Identities = rate(plan.n, r.d)
			} else {
				run.Stages = rate(plan.messages(), r.d)
			}
		case <-ctx.Done():
			return run, dsn, ctx.Err()
		}
	}
	wall := time.Since(start)
	sampleRSS()
	run.PeakRSS = peak
	var cpu time.Duration
	for _, w := range workers {
		cpu += w.CPU()
	}
	for _, w := range workers {
		if err := w.Stop(30 * time.Second); err != nil {
			return run, dsn, err
		}
	}
	workers = nil
	run.CPU = cpu.Seconds() / wall.Seconds()
	ob, err := bench.ReadOutbox(ctx, dsn)
	if err != nil {
		return run, dsn, err
	}
	run.Rows, run.Ready = ob.Rows, ob.ByState["ready"]
	if run.Released, err = bench.CountRows(ctx, dsn, "updated_at > created_at"); err != nil {
		return run, dsn, err
	}
	lag, err := bench.GroupLag(ctx, e.o.Brokers, "clbench-none", []string{dlq})
	if err != nil {
		return run, dsn, err
	}
	run.DeadLetters = lag.End
	logf("catch-up, %d instance(s): identities %.0f/s (%.1fs), stage changes %.0f/s (%.1fs), %.2f cores, peak RSS %d MiB; outbox %v, dead letters %d; %d rows released after waiting",
		k, run.Identities.PerSecond, run.Identities.Seconds, run.Stages.PerSecond, run.Stages.Seconds, run.CPU, peak>>20, ob.ByState, run.DeadLetters, run.Released)
	want := 3 * plan.n
	if run.Rows != want || run.Ready != want {
		return run, dsn, fmt.Errorf("outbox %v: want %d rows, all ready (duplicates collapsed, every deal joined)", ob.ByState, want)
	}
	if run.DeadLetters != int64(plan.garbage) {
		return run, dsn, fmt.Errorf("%d dead letters, want %d (one per garbage message)", run.DeadLetters, plan.garbage)
	}
	q, err := e.quotaRun(ctx, dsn, group, k)
	if err != nil {
		return run, dsn, fmt.Errorf("quota: %w", err)
	}
	e.res.CatchUp.Quota = append(e.res.CatchUp.Quota, q)
	return run, dsn, nil
}

// quotaRun starts k uploading workers on the caught-up outbox of dsn, every destination
// limited to quotaLimit requests per second, and counts the sandbox's requests over
// quotaWindow once every worker is up.
func (e *env) quotaRun(ctx context.Context, dsn, group string, k int) (QuotaRun, error) {
	q := QuotaRun{Instances: k, Limit: quotaLimit, PerSecond: map[string]float64{}}
	sb := platforms.NewSandbox(sandbox.Options{Seed: 1}, zap.NewNop())
	url, err := sb.Start("127.0.0.1:0")
	if err != nil {
		return q, err
	}
	defer sb.Shutdown(context.WithoutCancel(ctx))
	ids, stages := e.catchTopics()
	cfg, err := e.config(fmt.Sprintf("catch%d-upload", k), bench.WorkerConfig{
		Group: group, StageTopic: stages, IdentityTopic: ids, DeadLetterTopic: e.topics.dlq, DSN: dsn,
		Upload: true, SandboxURL: url, RatePerSecond: quotaLimit,
	})
	if err != nil {
		return q, err
	}
	var workers []*bench.Worker
	defer func() {
		for _, w := range workers {
			_ = w.Stop(30 * time.Second)
		}
	}()
	for i := 0; i < k; i++ {
		w, err := bench.StartWorker(e.bin, cfg, filepath.Join(e.dir, fmt.Sprintf("catch%d-upload-%d.log", k, i)))
		if err != nil {
			return q, err
		}
		workers = append(workers, w)
		if _, err := w.Admin(ctx); err != nil {
			return q, err
		}
	}
	// Every worker is up; the window starts once each has had a moment to claim.
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return q, err
	}
	before := sb.Counts()
	start := time.Now()
	if err := sleepCtx(ctx, quotaWindow); err != nil {
		return q, err
	}
	after := sb.Counts()
	q.Seconds = time.Since(start).Seconds()
	for _, p := range []string{google.DataManagerName, meta.Name, tiktok.Name} {
		q.PerSecond[p] = float64(after[p].Requests-before[p].Requests) / q.Seconds
	}
	logf("quota, %d instance(s), rate_per_second %d on every destination: requests/s google %.2f, meta %.2f, tiktok %.2f",
		k, quotaLimit, q.PerSecond[google.DataManagerName], q.PerSecond[meta.Name], q.PerSecond[tiktok.Name])
	return q, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// catchCeiling measures, in the same run, a plain group read of the stage topic, a plain
// COPY of its 3 outbox rows per deal and a plain COPY of the identities, each shaped like
// the rows the first run wrote.
func (e *env) catchCeiling(ctx context.Context, plan catchPlan, dsn, stages string) error {
	res := &e.res.CatchUp
	start := time.Now()
	if err := e.groupRead(ctx, "clbench-catch-raw-"+e.run, stages, plan.messages()); err != nil {
		return err
	}
	res.RawRead = rate(plan.messages(), time.Since(start))
	var err error
	if res.RawInsert, err = rawOutboxCopy(ctx, dsn, plan.ds, plan.n, []string{bench.DestGoogle, bench.DestMeta, bench.DestTikTok}); err != nil {
		return err
	}
	if res.RawIdentity, err = rawIdentityCopy(ctx, dsn, plan.ds, plan.n); err != nil {
		return err
	}
	if t := res.RawRead.Seconds + res.RawInsert.Seconds; t > 0 {
		res.Ceiling = float64(plan.messages()) / t
	}
	logf("catch-up ceiling: raw read %.0f/s (%.1fs), raw COPY of %d outbox rows %.0f/s (%.1fs): %.0f stage changes/s; raw identity COPY %.0f/s",
		res.RawRead.PerSecond, res.RawRead.Seconds, res.RawInsert.Count, res.RawInsert.PerSecond, res.RawInsert.Seconds, res.Ceiling, res.RawIdentity.PerSecond)
	return nil
}

// rawOutboxCopy copies n deals × dests rows shaped like dsn's first outbox row into a copy
// of the conversions table with its indexes, 1,000 rows per transaction.
func rawOutboxCopy(ctx context.Context, dsn string, ds bench.Dataset, n int, dests []string) (Rate, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Rate{}, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE raw_conversions (LIKE conversions INCLUDING ALL)"); err != nil {
		return Rate{}, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "DROP TABLE raw_conversions")
	var identity, subjects, version string
	var occurred time.Time
	if err := conn.QueryRow(ctx, "SELECT identity::text, subject_keys::text, mapping_version, occurred_at FROM conversions LIMIT 1").Scan(&identity, &subjects, &version, &occurred); err != nil {
		return Rate{}, fmt.Errorf("sample outbox row: %w", err)
	}
	cols := []string{"key", "kind", "destination", "platform", "rule", "mapping_version", "source", "object_type", "object_id",
		"subject_keys", "conversion_name", "occurred_at", "value", "currency", "identity", "with_identifier", "state", "next_attempt_at", "created_at", "updated_at"}
	now := time.Now()
	rows := n * len(dests)
	start := time.Now()
	err = copyBatches(ctx, conn, "raw_conversions", cols, rows, func(j int) []any {
		i, d := j/len(dests), dests[j%len(dests)]
		return []any{"raw" + ds.Key(i, d)[3:], "conversion", d, bench.PlatformOf[d], bench.Rule, version, ds.Source, "deal", ds.DealID(i),
			subjects, "987654321", occurred, float64(100 + i%5000), "USD", identity, true, "ready", now, now, now}
	})
	if err != nil {
		return Rate{}, err
	}
	return rate(rows, time.Since(start)), nil
}
