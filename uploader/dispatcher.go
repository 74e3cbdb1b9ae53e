package uploader

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/closedloop/closedloop/store"
)

// Dispatcher uploads one destination's due conversions. Create it with New and call Run
// once; Status may be called concurrently.
type Dispatcher struct {
	name    string
	cfg     DestinationConfig
	p       Platform
	poller  StatusPoller // nil unless p implements it
	grouper Grouper      // nil unless p implements it
	out     Outbox
	o       Options
	log     *zap.Logger
	m       *Metrics
	lim     waiter
	client  *retryablehttp.Client

	batchSize int // min(cfg.BatchSize, p.MaxBatch())
	replayCap int // most replay rows per batch
	initErr   error

	mu        sync.Mutex
	paused    bool
	reason    string
	since     time.Time
	pauseWait time.Duration
	nextProbe time.Time
	warned    map[string]bool     // unrecognised answers already logged, by reason
	held      map[string]HeldInfo // conversion actions whose rows are held, by conversion name
}

// HeldInfo says why one conversion action's rows are held on a destination.
type HeldInfo struct {
	Conversion string // the conversion action id / event name
	Reason     string
	Detail     string
	Since      time.Time
}

// Status is a destination's health as its dispatcher sees it.
type Status struct {
	Name       string
	Platform   string
	Paused     bool
	Reason     string    // why it is paused: the setup error's reason and detail
	Since      time.Time // when the pause began
	APIVersion string    // the configured API version, "" when the platform has none
	// Held lists the conversion actions whose rows this dispatcher last saw held (an
	// unknown or disabled conversion action), while the rest of the destination flows.
	Held []HeldInfo
}

// New returns the dispatcher of destination name. cfg should have had WithDefaults applied;
// zero values still fall back to the same defaults. log and m may be nil. A problem with the
// arguments is reported by Run.
func New(name string, cfg DestinationConfig, p Platform, out Outbox, opts Options, log *zap.Logger, m *Metrics) *Dispatcher {
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	o := opts.withDefaults()
	d := &Dispatcher{
		name: name, cfg: cfg, p: p, out: out, o: o, m: m,
		log: log.With(zap.String("destination", name), zap.String("platform", cfg.Platform)),
	}
	switch {
	case name == "":
		d.initErr = errors.New("uploader: destination name is empty")
		return d
	case p == nil:
		d.initErr = fmt.Errorf("uploader: destination %s: no platform", name)
		return d
	case out == nil:
		d.initErr = fmt.Errorf("uploader: destination %s: no outbox", name)
		return d
	}
	d.poller, _ = p.(StatusPoller)
	d.grouper, _ = p.(Grouper)

	d.batchSize = p.MaxBatch()
	if cfg.BatchSize > 0 && cfg.BatchSize < d.batchSize {
		d.batchSize = cfg.BatchSize
	}
	if d.batchSize <= 0 {
		d.initErr = fmt.Errorf("uploader: destination %s: platform allows no rows per batch", name)
		return d
	}
	if d.cfg.MaxAttempts <= 0 {
		d.cfg.MaxAttempts = 10
	}
	if d.cfg.Timeout <= 0 {
		d.cfg.Timeout = 60 * time.Second
	}
	share := cfg.ReplayShare
	if share <= 0 {
		share = 0.5
	}
	// At least one replay row per batch, so a replay always progresses.
	d.replayCap = max(1, min(d.batchSize, int(math.Floor(share*float64(d.batchSize)))))

	limit, burst := rate.Inf, max(cfg.Burst, 1)
	if cfg.RatePerSecond > 0 {
		limit = rate.Limit(cfg.RatePerSecond)
	}
	local := rate.NewLimiter(limit, burst)
	d.lim = local
	if taker, ok := out.(RateTaker); ok && cfg.RatePerSecond > 0 {
		// The quota is the platform's (per Google Cloud project, per Meta app): every
		// worker on this database draws from one bucket.
		d.lim = &sharedLimiter{dest: name, perSecond: cfg.RatePerSecond, burst: burst, taker: taker,
			local: local, now: o.Now, log: d.log}
	}
	d.client = newHTTPClient(name, d.cfg.Timeout, o, d.lim, d.log.Named("http"), m)
	return d
}

// Name is the destination's name.
func (d *Dispatcher) Name() string { return d.name }

// BatchSize is the most rows the dispatcher puts in one request.
func (d *Dispatcher) BatchSize() int { return d.batchSize }

// Status reports whether the destination is paused and why.
func (d *Dispatcher) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Name: d.name, Platform: d.cfg.Platform, Paused: d.paused, Reason: d.reason, Since: d.since, APIVersion: d.cfg.APIVersion}
	for _, h := range d.held {
		st.Held = append(st.Held, h)
	}
	sort.Slice(st.Held, func(i, j int) bool { return st.Held[i].Conversion < st.Held[j].Conversion })
	return st
}

// noteHeld records (and logs, the first time) that conversion's rows are held.
func (d *Dispatcher) noteHeld(conversion, reason, detail string) {
	d.mu.Lock()
	_, seen := d.held[conversion]
	if d.held == nil {
		d.held = map[string]HeldInfo{}
	}
	if !seen {
		d.held[conversion] = HeldInfo{Conversion: conversion, Reason: reason, Detail: detail, Since: d.o.Now()}
	}
	n := len(d.held)
	d.mu.Unlock()
	d.m.HeldActions.WithLabelValues(d.name).Set(float64(n))
	if !seen {
		d.log.Warn("conversion action refused by the platform: its rows are held (the rest of the destination keeps flowing) "+
			"and resent at each hold probe until the mapping or the platform is fixed",
			zap.String("conversion", conversion), zap.String("reason", reason), zap.String("detail", redact(detail)),
			zap.Duration("probe_every", d.o.PauseMax))
	}
}

// clearHeld forgets a held conversion action once one of its rows got through.
func (d *Dispatcher) clearHeld(conversion string) {
	d.mu.Lock()
	_, was := d.held[conversion]
	delete(d.held, conversion)
	n := len(d.held)
	d.mu.Unlock()
	if was {
		d.m.HeldActions.WithLabelValues(d.name).Set(float64(n))
		d.log.Info("conversion action accepted again; its held rows flow", zap.String("conversion", conversion))
	}
}

// Run dispatches until ctx is done, then returns nil after handing back what it holds. It
// also sweeps expired leases and, for StatusPoller platforms, polls rows in state sent.
// Store and platform failures are logged and retried, never returned; Run returns an error
// only when the dispatcher was built with bad arguments.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.initErr != nil {
		return d.initErr
	}
	d.m.Paused.WithLabelValues(d.name).Set(0)
	d.log.Info("dispatcher started", zap.Int("batch_size", d.batchSize), zap.Int("replay_cap", d.replayCap),
		zap.Float64("rate_per_second", d.cfg.RatePerSecond), zap.String("owner", d.o.Owner))
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.dispatchLoop(ctx) })
	g.Go(func() error { return d.sweepLoop(ctx) })
	if d.poller != nil {
		g.Go(func() error { return d.pollLoop(ctx) })
	}
	err := g.Wait()
	d.log.Info("dispatcher stopped")
	return err
}

func (d *Dispatcher) dispatchLoop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		if wait := d.untilProbe(); wait > 0 {
			if !sleep(ctx, wait) {
				return nil
			}
		}
		more, err := d.cycle(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Error("dispatch cycle failed; retrying after the poll interval", zap.String("error", errText(err)))
			more = false
		}
		if !more && !sleep(ctx, d.o.PollInterval) {
			return nil
		}
	}
}

// sleep waits for d or ctx; it reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// cycle claims one batch and sends it. more reports that due rows are probably left, so
// the next cycle should start at once.
func (d *Dispatcher) cycle(ctx context.Context) (more bool, err error) {
	batch, more, err := d.fill(ctx)
	for _, group := range d.groups(batch) {
		d.process(ctx, group)
	}
	return more, err
}

// fill claims rows until a batch is full or nothing due is left. Rows failing Check are
// recorded at once. Claimed rows are returned even when a later claim fails, so they are
// sent rather than left to their lease.
func (d *Dispatcher) fill(ctx context.Context) (batch []store.Conversion, more bool, err error) {
	batch = make([]store.Conversion, 0, d.batchSize)
	replays := 0
	for len(batch) < d.batchSize {
		need := d.batchSize - len(batch)
		replayLimit := min(need, d.replayCap-replays)
		if replayLimit <= 0 {
			// The replay share of this batch is used up, and the store reads a zero
			// ReplayLimit as no cap: send what we have; the next batch has a fresh share.
			return batch, true, nil
		}
		now := d.o.Now()
		rows, err := d.out.ClaimDue(ctx, store.Claim{
			Destination: d.name, Owner: d.o.Owner,
			Limit: need, ReplayLimit: replayLimit,
			LeaseFor: d.o.LeaseFor, Now: now,
		})
		if err != nil {
			return batch, false, fmt.Errorf("claim: %w", err)
		}
		var early []store.Outcome
		var setup *Error
		for i := range rows {
			c := &rows[i]
			if c.Replay {
				replays++
			}
			re := d.p.Check(c, now)
			if re == nil {
				batch = append(batch, *c)
				continue
			}
			o, se := d.checkOutcome(c, re, now)
			if se != nil && setup == nil {
				setup = se
			}
			early = append(early, o)
		}
		if len(early) > 0 {
			d.record(ctx, early)
		}
		if setup != nil {
			// The platform cannot take anything now: hand the batch back unsent.
			back := make([]store.Outcome, len(batch))
			for i := range batch {
				back[i] = handBack(&batch[i], now)
			}
			if len(back) > 0 {
				d.record(ctx, back)
			}
			d.pause(setup)
			return nil, false, nil
		}
		if len(rows) < need {
			// Nothing more is due, unless the replay cap held replay rows back.
			return d.gate(ctx, batch, now, replays >= d.replayCap)
		}
	}
	return d.gate(ctx, batch, d.o.Now(), true)
}

// gate applies gateAdjustments to a filled batch and records the outcomes of the rows it
// holds back; when the store cannot be read, the adjustments are handed back unsent.
func (d *Dispatcher) gate(ctx context.Context, batch []store.Conversion, now time.Time, more bool) ([]store.Conversion, bool, error) {
	kept, outs, err := d.gateAdjustments(ctx, batch, now)
	if err != nil {
		var back []store.Outcome
		kept = batch[:0:0]
		for i := range batch {
			if store.Adjustment(batch[i].Kind) {
				back = append(back, handBack(&batch[i], now))
			} else {
				kept = append(kept, batch[i])
			}
		}
		d.record(ctx, back)
		return kept, false, err
	}
	if len(outs) > 0 {
		d.record(ctx, outs)
	}
	return kept, more, nil
}

// groups splits a batch by the platform's BatchGroup, keeping the rows' order.
func (d *Dispatcher) groups(batch []store.Conversion) [][]store.Conversion {
	if len(batch) == 0 {
		return nil
	}
	if d.grouper == nil {
		return [][]store.Conversion{batch}
	}
	var order []string
	byGroup := map[string][]store.Conversion{}
	for i := range batch {
		g := d.grouper.BatchGroup(&batch[i])
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], batch[i])
	}
	out := make([][]store.Conversion, 0, len(order))
	for _, g := range order {
		out = append(out, byGroup[g])
	}
	return out
}

// process sends one batch (bisecting when needed) and records an outcome for every row:
// rows that got no answer (pause, shutdown) are handed back unchanged.
func (d *Dispatcher) process(ctx context.Context, rows []store.Conversion) {
	outs := make([]store.Outcome, len(rows))
	done := make([]bool, len(rows))
	var reached bool
	stop := d.deliver(ctx, rows, outs, done, &reached)
	now := d.o.Now()
	handed := 0
	for i := range rows {
		if !done[i] {
			outs[i] = handBack(&rows[i], now)
			handed++
		}
	}
	if handed > 0 {
		d.m.Rows.WithLabelValues(d.name, "handed_back").Add(float64(handed))
	}
	d.record(ctx, outs)

	var se *Error
	switch {
	case errors.As(stop, &se) && se.Class == ClassSetup:
		d.pause(se)
	case stop == nil && reached:
		d.resume()
	}
}

// record writes outcomes; after cancellation it still tries, on a short detached deadline.
// A failure is logged: the leases then expire and the rows return to ready.
func (d *Dispatcher) record(ctx context.Context, outs []store.Outcome) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), d.o.ShutdownTimeout)
		defer cancel()
	}
	if err := d.out.RecordOutcomes(ctx, d.o.Owner, outs, d.o.Now()); err != nil {
		d.log.Error("recording outcomes failed; the rows return to ready when their lease expires",
			zap.Int("rows", len(outs)), zap.String("error", errText(err)))
	}
}

// untilProbe is how long a paused destination still waits before its next probe.
func (d *Dispatcher) untilProbe() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.paused {
		return 0
	}
	return d.nextProbe.Sub(d.o.Now())
}

// pause stops the destination until a probe succeeds; the wait between probes doubles from
// PauseMin up to PauseMax.
func (d *Dispatcher) pause(se *Error) {
	now := d.o.Now()
	d.mu.Lock()
	first := !d.paused
	if first {
		d.paused, d.since, d.pauseWait = true, now, d.o.PauseMin
	} else {
		d.pauseWait = min(2*d.pauseWait, d.o.PauseMax)
	}
	d.reason = se.Reason + ": " + se.Detail
	d.nextProbe = now.Add(d.pauseWait)
	wait, since := d.pauseWait, d.since
	d.mu.Unlock()

	d.m.Paused.WithLabelValues(d.name).Set(1)
	fields := []zap.Field{zap.String("reason", se.Reason), zap.String("detail", redact(se.Detail)), zap.Duration("probe_in", wait)}
	if first {
		d.log.Error("DESTINATION PAUSED: its setup needs fixing (credentials, account, conversion action or quota); "+
			"rows are kept unchanged and will be sent once a probe succeeds", fields...)
		return
	}
	d.log.Warn("destination still paused", append(fields, zap.Duration("paused_for", now.Sub(since)))...)
}

func (d *Dispatcher) resume() {
	now := d.o.Now()
	d.mu.Lock()
	if !d.paused {
		d.mu.Unlock()
		return
	}
	since := d.since
	d.paused, d.reason, d.since, d.pauseWait, d.nextProbe = false, "", time.Time{}, 0, time.Time{}
	d.mu.Unlock()
	d.m.Paused.WithLabelValues(d.name).Set(0)
	d.log.Info("destination resumed", zap.Duration("paused_for", now.Sub(since)))
}
