package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/report"
	"github.com/closedloop/closedloop/internal/worker"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// Options tune a demo run.
type Options struct {
	Out         io.Writer     // where the report goes
	Log         *zap.Logger   // the worker's log
	KeepRunning bool          // stay up after the report until ctx ends
	Timeout     time.Duration // for the sample to drain; default 50s
	// Inspect, when set, is called after the report while the worker still runs (tests load
	// the status page, /metrics and /readyz here).
	Inspect func(ctx context.Context, in Inspection)
}

// Inspection is what Options.Inspect gets while the worker runs.
type Inspection struct {
	AdminAddr string
	Result    Result
	// Report builds the report of the running worker's store for any period.
	Report func(ctx context.Context, since, until time.Time) (report.Report, error)
}

// Result is what a demo run observed.
type Result struct {
	Report      report.Report
	Sandbox     map[string]sandbox.Counts
	DeadLetters int
	Mismatches  []string // differences from SampleTruth and from the sandbox; empty is success
	// Enriched are lead K's conversions (the thin HubSpot deal), one per destination.
	Enriched    []store.Conversion
	CRMRequests int // HubSpot API requests the CRM emulator answered
}

// Run starts the embedded environment and the real worker, publishes the sample, waits for
// the pipeline to drain, prints the reconciliation report and checks it against the known
// truth and the sandbox's own counts.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 50 * time.Second
	}
	log := opts.Log
	env, err := Start(ctx, log)
	if err != nil {
		return Result{}, err
	}
	defer env.Close()
	cfg := env.Config()

	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	adminAddr := make(chan string, 1)
	ingestAddr := make(chan string, 1)
	workerDone := make(chan error, 1)
	go func() {
		workerDone <- worker.Run(wctx, cfg, log, worker.Options{
			Listening:       func(a string) { adminAddr <- a },
			IngestListening: func(a string) { ingestAddr <- a },
			Uploader: uploader.Options{
				PollInterval: 100 * time.Millisecond, StatusPollInterval: 300 * time.Millisecond,
				LeaseSweepInterval: time.Second, BackoffBase: 500 * time.Millisecond, BackoffMax: 2 * time.Second,
				AdjustmentWait: 200 * time.Millisecond,
			},
		})
	}()
	var addr string
	select {
	case addr = <-adminAddr:
	case err := <-workerDone:
		return Result{}, fmt.Errorf("worker did not start: %w", err)
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}

	var webhooks *webhookClient
	select {
	case a := <-ingestAddr:
		webhooks = &webhookClient{base: "http://" + a, sources: cfg.Ingest.Sources}
	default: // ingest not configured
	}

	now := time.Now().UTC()
	first, later := Sample(now)
	dctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(env.Brokers()...), Timeout: 5 * time.Second}
	w := &kafka.Writer{Addr: kafka.TCP(env.Brokers()...), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()

	st, err := store.Open(ctx, store.Config{Driver: "sqlite", Path: cfg.Store.Path}, zap.NewNop())
	if err != nil {
		return Result{}, err
	}
	defer st.Close()

	for _, phase := range [][]Message{first, later} {
		if err := publish(dctx, w, webhooks, phase); err != nil {
			return Result{}, err
		}
		if err := waitConsumed(dctx, client, cfg.Kafka.GroupID, cfg.Kafka.GroupID+"-identities"); err != nil {
			return Result{}, err
		}
	}
	if err := waitSettled(dctx, st); err != nil {
		return Result{}, err
	}

	res := Result{Sandbox: env.Sandbox().Counts()}
	res.Report, err = report.Build(ctx, st, report.Options{
		Since: now.Add(-7 * 24 * time.Hour), Until: now.Add(time.Hour),
		RateChangeThreshold: cfg.Report.RateChangeThreshold, SparseWeeklyVolume: cfg.Report.SparseWeeklyVolume,
	})
	if err != nil {
		return res, err
	}
	res.DeadLetters, err = countTopic(dctx, client, DeadLetterTopic)
	if err != nil {
		return res, err
	}
	res.Mismatches = check(res)
	res.Enriched, err = enrichedThinDeal(ctx, st)
	if err != nil {
		return res, err
	}
	res.Mismatches = append(res.Mismatches, checkEnriched(res.Enriched)...)
	res.CRMRequests = env.CRM().Requests(crmsandbox.HubSpot)

	out := opts.Out
	fmt.Fprintf(out, "\nclosedloop demo: %d identity captures and stage changes (4 CRM formats) through the real worker\n", len(first)+len(later))
	if webhooks != nil {
		fmt.Fprintf(out, "(%d of them as signed webhooks through the ingest endpoint)\n", webhooks.sent)
	}
	if err := report.Render(out, res.Report, "table"); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "\nSandbox (what the platforms took, by dedup key):\n")
	for _, p := range []string{"google", "meta", "tiktok", "microsoft", "linkedin"} {
		c := res.Sandbox[p]
		fmt.Fprintf(out, "  %-9s requests %3d  events received %3d  took effect %3d  duplicates dropped %d", p, c.Requests, c.Received, c.AcceptedUnique, c.Duplicates)
		if c.Retracted+c.Restated > 0 {
			fmt.Fprintf(out, "  +%d adj.", c.Retracted+c.Restated)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "Dead-letter topic: %d message(s) (the malformed one)\n", res.DeadLetters)
	fmt.Fprintf(out, "Thin HubSpot deal %s: enriched from the CRM emulator (%d HubSpot API requests),\n", ThinDealID, res.CRMRequests)
	for _, c := range res.Enriched {
		v := "no value"
		if c.Value != nil {
			v = fmt.Sprintf("%g %s", *c.Value, c.Currency)
		}
		fmt.Fprintf(out, "  %-10s %-16s %-8s value %s\n", c.Destination, c.ConversionName, c.State, v)
	}
	if len(res.Mismatches) == 0 {
		fmt.Fprintln(out, "\nEvery count matches the sample's known truth and the sandbox's own counts.")
	} else {
		fmt.Fprintln(out, "\nMISMATCHES against the known truth:")
		for _, m := range res.Mismatches {
			fmt.Fprintln(out, "  -", m)
		}
	}

	if opts.Inspect != nil {
		opts.Inspect(ctx, Inspection{AdminAddr: addr, Result: res, Report: func(ctx context.Context, since, until time.Time) (report.Report, error) {
			return report.Build(ctx, st, report.Options{Since: since, Until: until,
				RateChangeThreshold: cfg.Report.RateChangeThreshold, SparseWeeklyVolume: cfg.Report.SparseWeeklyVolume})
		}})
	}
	if opts.KeepRunning {
		env.PrintHowTo(out)(addr)
		<-ctx.Done()
	}
	stopWorker()
	if err := <-workerDone; err != nil && !errors.Is(err, context.Canceled) {
		return res, fmt.Errorf("worker: %w", err)
	}
	return res, nil
}

func publish(ctx context.Context, w *kafka.Writer, webhooks *webhookClient, msgs []Message) error {
	for _, m := range msgs {
		if webhooks != nil {
			sent, err := webhooks.post(ctx, m)
			if err != nil {
				return err
			}
			if sent {
				continue
			}
		}
		km := m.Message
		km.Topic = m.Topic
		if err := w.WriteMessages(ctx, km); err != nil {
			return fmt.Errorf("publish to %s: %w", m.Topic, err)
		}
	}
	return nil
}

// waitConsumed waits until both groups have committed every message on their topics.
func waitConsumed(ctx context.Context, c *kafka.Client, stageGroup, idGroup string) error {
	for {
		s, err := lag(ctx, c, stageGroup, StageTopic)
		if err == nil {
			var i int64
			i, err = lag(ctx, c, idGroup, IdentityTopic)
			if err == nil && s == 0 && i == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the worker to consume the sample: %w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lag is the messages on topic not yet committed by group.
func lag(ctx context.Context, c *kafka.Client, group, topic string) (int64, error) {
	ends, err := endOffsets(ctx, c, topic)
	if err != nil {
		return 0, err
	}
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitionsOf(ends)}}
	resp, err := c.OffsetFetch(ctx, req)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range resp.Topics[topic] {
		committed := p.CommittedOffset
		if committed < 0 {
			committed = 0
		}
		total += ends[p.Partition] - committed
	}
	return total, nil
}

func partitionsOf(m map[int]int64) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	return out
}

func endOffsets(ctx context.Context, c *kafka.Client, topic string) (map[int]int64, error) {
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	var reqs []kafka.OffsetRequest
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			reqs = append(reqs, kafka.LastOffsetOf(p.ID))
		}
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends, nil
}

func countTopic(ctx context.Context, c *kafka.Client, topic string) (int, error) {
	ends, err := endOffsets(ctx, c, topic)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ends {
		n += int(e)
	}
	return n, nil
}

// waitSettled waits until no conversion is awaiting enrichment, ready, in flight or sent
// (awaiting identity and terminal states are settled).
func waitSettled(ctx context.Context, st *store.Store) error {
	for {
		byDest, err := st.CountByState(ctx)
		busy := 0
		for _, states := range byDest {
			busy += states[store.StateReady] + states[store.StateInFlight] + states[store.StateSent] + states[store.StateAwaitingEnrichment]
		}
		if err == nil && busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for uploads to settle (%d still busy): %w", busy, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// enrichedThinDeal returns lead K's conversions, by destination.
func enrichedThinDeal(ctx context.Context, st *store.Store) ([]store.Conversion, error) {
	all, err := st.ListConversions(ctx, store.ListFilter{})
	if err != nil {
		return nil, err
	}
	var out []store.Conversion
	for _, c := range all {
		if c.Source == "hubspot" && c.ObjectID == ThinDealID {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Destination < out[j].Destination })
	return out, nil
}

// checkEnriched says how lead K's conversions differ from what enrichment must give them:
// accepted on every closed-won destination with the CRM's amount and currency.
func checkEnriched(convs []store.Conversion) []string {
	var out []string
	const want = 5 // closed-won goes to google-ads, meta, tiktok, microsoft and linkedin
	if len(convs) != want {
		out = append(out, fmt.Sprintf("thin HubSpot deal %s: %d conversions, want %d", ThinDealID, len(convs), want))
	}
	for _, c := range convs {
		switch {
		case c.State != store.StateAccepted:
			out = append(out, fmt.Sprintf("thin HubSpot deal %s on %s: %s (%s), want accepted", ThinDealID, c.Destination, c.State, c.Reason))
		case c.Value == nil || *c.Value != ThinDealAmount || c.Currency != ThinDealCurrency:
			got := "none"
			if c.Value != nil {
				got = fmt.Sprintf("%g", *c.Value)
			}
			out = append(out, fmt.Sprintf("thin HubSpot deal %s on %s: value %s %s, want %g %s", ThinDealID, c.Destination, got, c.Currency, ThinDealAmount, ThinDealCurrency))
		}
	}
	return out
}

// check compares the report with SampleTruth and with the sandbox.
func check(r Result) []string {
	var out []string
	platformAccepted := map[string]int{}
	for _, want := range SampleTruth {
		var got *report.Conversion
		for i := range r.Report.Conversions {
			c := &r.Report.Conversions[i]
			if c.Destination == want.Destination && c.Conversion == want.Conversion {
				got = c
			}
		}
		if got == nil {
			out = append(out, fmt.Sprintf("%s %s: missing from the report", want.Destination, want.Conversion))
			continue
		}
		t := got.Total
		for _, f := range []struct {
			name      string
			got, want int
		}{
			{"created", t.Created, want.Created}, {"accepted", t.Accepted, want.Accepted},
			{"rejected", t.Rejected, want.Rejected}, {"expired", t.Expired, want.Expired},
			{"skipped", t.Skipped, want.Skipped}, {"awaiting", t.Awaiting, want.Awaiting},
		} {
			if f.got != f.want {
				out = append(out, fmt.Sprintf("%s %s: %s %d, want %d", want.Destination, want.Conversion, f.name, f.got, f.want))
			}
		}
		platformAccepted[got.Platform] += t.Accepted
	}
	for p, n := range platformAccepted {
		c := r.Sandbox[p]
		// Accepted rows are conversions and the adjustments the platform applied.
		if took := c.AcceptedUnique + c.Restated + c.Retracted; took != n {
			out = append(out, fmt.Sprintf("sandbox %s: %d conversions and adjustments took effect, the report says %d accepted", p, took, n))
		}
		if c.Duplicates != 0 {
			out = append(out, fmt.Sprintf("sandbox %s: %d duplicates received", p, c.Duplicates))
		}
	}
	if r.DeadLetters != SampleDeadLetters {
		out = append(out, fmt.Sprintf("dead letters: %d, want %d", r.DeadLetters, SampleDeadLetters))
	}
	return out
}
