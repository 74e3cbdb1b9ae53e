package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/store"
)

// enrichBatch is crms.batch of the enrichment run: rows per claim (HubSpot's batch reads
// carry 100 ids, so 5 of each per claim).
const enrichBatch = 500

// EnrichResult is the enrichment run.
type EnrichResult struct {
	Rows      int     `json:"rows"`    // conversions awaiting enrichment at the start
	Seconds   float64 `json:"seconds"` // worker start until none awaits
	PerSecond float64 `json:"per_second"`
	PeakRSS   int64   `json:"peak_rss_bytes"`
	Requests  int     `json:"crm_requests"`
	Batch     int     `json:"batch"`
}

// enrichment measures the enricher: min(N, 100,000) conversions of thin HubSpot webhooks
// awaiting enrichment, a worker enriching them from the CRM emulator (no rate limit,
// HubSpot batch reads of 100), and its peak RSS with that backlog.
func (e *env) enrichment(ctx context.Context) error {
	n := e.smallN
	dbName := "clbench_" + e.run + "_enrich"
	dsn, err := bench.CreateDatabase(ctx, e.o.AdminDSN, dbName)
	if err != nil {
		return err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = bench.DropDatabase(c, e.o.AdminDSN, dbName)
	}()
	emu, err := bench.StartCRMEmulator(n)
	if err != nil {
		return err
	}
	defer emu.Close()
	if err := bench.SeedAwaitingEnrichment(ctx, dsn, n, time.Now()); err != nil {
		return err
	}
	path := filepath.Join(e.dir, "enrich.yaml")
	if err := bench.WriteEnrichConfig(path, bench.EnrichConfig{Brokers: e.o.Brokers, Group: "clbench-" + e.run + "-enrich",
		StageTopic: e.topics.empty, DLQTopic: e.topics.dlq, DSN: dsn, CRMURL: emu.URL, Batch: enrichBatch}); err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, DSN: dsn, MaxConns: 2, MigrateOnStart: false}, zap.NewNop())
	if err != nil {
		return err
	}
	defer st.Close()

	start := time.Now()
	w, err := bench.StartWorker(e.bin, path, filepath.Join(e.dir, "enrich.log"))
	if err != nil {
		return err
	}
	defer w.Stop(30 * time.Second)
	var peak int64
	for {
		if rss, err := w.PeakRSS(); err == nil {
			peak = max(peak, rss)
		}
		left, err := bench.AwaitingEnrichment(ctx, st)
		if err != nil {
			return err
		}
		if left == 0 {
			break
		}
		select {
		case <-w.Done():
			return fmt.Errorf("the worker exited with %d rows awaiting enrichment: %v", left, w.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	took := time.Since(start)
	if rss, err := w.PeakRSS(); err == nil {
		peak = max(peak, rss)
	}
	counts, err := st.CountByState(ctx)
	if err != nil {
		return err
	}
	if ready := counts[bench.DestMeta][store.StateReady]; ready != n {
		return fmt.Errorf("enrichment: %d of %d rows ready (%v)", ready, n, counts[bench.DestMeta])
	}
	e.res.Enrich = EnrichResult{Rows: n, Seconds: took.Seconds(), PerSecond: float64(n) / took.Seconds(), PeakRSS: peak,
		Requests: emu.Requests(crmsandbox.HubSpot), Batch: enrichBatch}
	logf("enrichment of %d deals: %.0f/s (%.1fs), %d CRM requests, peak RSS %s", n, e.res.Enrich.PerSecond, took.Seconds(),
		e.res.Enrich.Requests, mib(peak))
	return nil
}

// enrichRows are the enrichment run's lines of the results table.
func (r *Results) enrichRows() [][4]string {
	x := r.Enrich
	return [][4]string{
		{fmt.Sprintf("enrichment: %d thin HubSpot deals, batch reads (%d requests) from the CRM emulator, no rate limit", x.Rows, x.Requests),
			fmt.Sprintf("%.0f deals/s (%.1fs)", x.PerSecond, x.Seconds), "", ""},
		{fmt.Sprintf("worker peak RSS, %d rows awaiting enrichment", x.Rows), mib(x.PeakRSS), "≤ 150 MiB", verdict(x.PeakRSS <= 150<<20)},
	}
}
