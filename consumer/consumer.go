package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

// Store is everything the consumer needs from the store (*store.Store satisfies it).
type Store interface {
	StageStore
	OffsetReader
	IdentityStore
	// ExpireAwaiting marks conversions created before createdBefore and still awaiting
	// identity as unmatched with reason; it returns how many.
	ExpireAwaiting(ctx context.Context, createdBefore time.Time, reason string) (int, error)
}

// ReasonNoIdentifier is the reason a conversion ends unmatched when no usable identifier
// arrived within awaiting_timeout.
const ReasonNoIdentifier = "no_identifier"

// Deps are the consumer's collaborators.
type Deps struct {
	Store Store // required
	// Mapping returns the active stage mapping; it is called once per batch, so a
	// hot-reloaded mapping applies from the next batch on. Required.
	Mapping    func() *crm.Mapping
	Normalizer pii.Normalizer
	Metrics    *Metrics // nil records nothing
	// Enriches reports whether a CRM connection enriches a source (enrich.Config.Enriches);
	// nil enriches nothing.
	Enriches func(source string) bool
	// DeadLetters overrides the dead-letter producer (default NewDeadLetterWriter(cfg)).
	// The consumer closes only a producer it created.
	DeadLetters messageWriter
	Log         *zap.Logger
	// Now is the clock of the sweeper (default time.Now).
	Now func() time.Time
}

// Consumer runs the stage-change reader, the identity reader and the sweeper of one
// process. Create it with New, run it once with Run.
type Consumer struct {
	cfg      Config
	deps     Deps
	log      *zap.Logger
	stages   *Pipeline
	ids      *IdentityPipeline
	dlq      messageWriter
	ownDLQ   *DeadLetterWriter
	stageRdr *kafka.Reader
	idRdr    *kafka.Reader
	stageUp  atomic.Bool
	idUp     atomic.Bool
	// idBacklog is how far behind the identity reader is; the stage reader yields to it
	// (see yield.go). Nil without an identity topic.
	idBacklog *identityBacklog
	// drainTimeout bounds finishing the batch in hand once ctx is cancelled.
	drainTimeout time.Duration

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and builds the readers and pipelines; nothing connects until Run.
func New(cfg Config, deps Deps) (*Consumer, error) {
	if errs := cfg.Validate("kafka"); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if deps.Store == nil || deps.Mapping == nil {
		return nil, errors.New("consumer: Deps.Store and Deps.Mapping are required")
	}
	cfg = cfg.withDefaults()
	c := &Consumer{cfg: cfg, deps: deps, log: deps.Log, drainTimeout: 30 * time.Second}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if deps.Now == nil {
		c.deps.Now = time.Now
	}
	c.dlq = deps.DeadLetters
	if c.dlq == nil {
		c.ownDLQ = NewDeadLetterWriter(cfg, KafkaLogger(c.log.Named("kafka.dlq")), KafkaErrorLogger(c.log.Named("kafka.dlq")))
		c.dlq = c.ownDLQ
	}
	formats := make(map[string]string, len(cfg.StageTopics))
	topics := make([]string, len(cfg.StageTopics))
	for i, t := range cfg.StageTopics {
		formats[t.Topic] = t.Format
		topics[i] = t.Topic
	}
	var err error
	c.stages, err = NewPipeline(PipelineConfig{
		Formats: formats, Mapping: deps.Mapping, Normalizer: deps.Normalizer, Store: deps.Store, Offsets: deps.Store,
		DeadLetters: c.dlq, DeadLetterTopic: cfg.DeadLetterTopic, Metrics: deps.Metrics,
		Enriches: deps.Enriches, Log: c.log.Named("stages"),
	})
	if err != nil {
		return nil, err
	}
	c.stageRdr = c.newReader(cfg.GroupID, topics, "kafka.stages")
	if cfg.IdentityTopic != "" {
		c.ids, err = NewIdentityPipeline(IdentityPipelineConfig{
			Normalizer: deps.Normalizer, Store: deps.Store, DeadLetters: c.dlq,
			DeadLetterTopic: cfg.DeadLetterTopic, Metrics: deps.Metrics, Log: c.log.Named("identities"),
		})
		if err != nil {
			return nil, err
		}
		c.ids.writeTimeout = c.drainTimeout
		if cfg.identitiesFirst() {
			c.idBacklog = newIdentityBacklog(time.Now)
		}
		c.idRdr = c.newReader(cfg.IdentityGroupID, []string{cfg.IdentityTopic}, "kafka.identities")
	}
	return c, nil
}

// fetchMaxWait is the readers' MaxWait: the broker holds an idle fetch for 1s and the
// answer has 1s to arrive. New messages end a fetch at once (MinBytes), so it adds no
// latency; it bounds how long an idle reader takes to stop.
const fetchMaxWait = 2 * time.Second

func (c *Consumer) newReader(group string, topics []string, name string) *kafka.Reader {
	start := kafka.FirstOffset
	if c.cfg.StartOffset == "last" {
		start = kafka.LastOffset
	}
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:     c.cfg.Brokers,
		GroupID:     group,
		GroupTopics: topics,
		Dialer:      &kafka.Dialer{ClientID: c.cfg.ClientID, Timeout: 10 * time.Second, DualStack: true},
		// A full batch can wait in the queue while the previous one is written.
		QueueCapacity: c.cfg.BatchSize,
		MinBytes:      c.cfg.MinBytes,
		MaxBytes:      c.cfg.MaxBytes,
		// MaxWait is the broker's long poll on a partition with nothing new, not the batch
		// window (Run's fill timer is that). kafka-go sets the read deadline to MaxWait and
		// asks the broker to answer up to 1s sooner, but only a quarter sooner below 1s: a
		// MaxWait of batch_wait's size (50-200ms) leaves too little margin on a busy host, and
		// every late answer is an i/o timeout, an error log line and a reconnect.
		MaxWait:        fetchMaxWait,
		StartOffset:    start,
		CommitInterval: 0, // synchronous commits, only ever after the durable write
		// Lag comes from each message's high watermark; no extra polling.
		ReadLagInterval:       -1,
		WatchPartitionChanges: true,
		Logger:                KafkaLogger(c.log.Named(name)),
		ErrorLogger:           KafkaErrorLogger(c.log.Named(name)),
	})
}

// Ready reports whether the stage reader (and the identity reader, when configured) has
// joined its group: it has fetched a message or been given an assignment.
func (c *Consumer) Ready() bool {
	return c.stageUp.Load() && (c.idRdr == nil || c.idUp.Load())
}

// Run consumes until ctx is cancelled or a durable step fails for good. On cancellation
// the batch in hand is finished (bounded by a drain timeout) and committed, the readers
// leave their groups and Run returns nil. An error means offsets stopped advancing at the
// last fully written batch.
func (c *Consumer) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return c.loop(gctx, c.stageRdr, &c.stageUp, "stage changes", func(ctx context.Context, msgs []kafka.Message) func(context.Context) error {
			prep := c.stages.decode(msgs)
			c.stages.joinAhead(ctx, prep)
			return func(ctx context.Context) error {
				_, err := c.stages.finish(ctx, prep)
				return err
			}
		})
	})
	if c.idRdr != nil {
		g.Go(func() error {
			return c.loop(gctx, c.idRdr, &c.idUp, "identities", func(ctx context.Context, msgs []kafka.Message) func(context.Context) error {
				b := c.ids.start(ctx, c.ids.decode(msgs))
				return func(ctx context.Context) error {
					_, err := c.ids.finish(ctx, b)
					return err
				}
			})
		})
	}
	g.Go(func() error { return c.sweep(gctx) })
	g.Go(func() error { c.watchJoin(gctx); return nil })
	err := g.Wait()
	if c.ids != nil {
		c.ids.wait() // the writes of batches abandoned after an error
	}
	return err
}

// Close releases the readers and the dead-letter producer New created. Call it after Run
// returned; calls after the first return the first one's result.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Consumer) close() error {
	var errs []error
	if err := c.stageRdr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("stage reader: %w", err))
	}
	if c.idRdr != nil {
		if err := c.idRdr.Close(); err != nil {
			errs = append(errs, fmt.Errorf("identity reader: %w", err))
		}
	}
	if c.ownDLQ != nil {
		if err := c.ownDLQ.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dead-letter producer: %w", err))
		}
	}
	return errors.Join(errs...)
}

// watchJoin marks a reader ready once its stats show a generation (a join), for readers
// whose topics are still empty. It is the only caller of Stats (which resets counters).
func (c *Consumer) watchJoin(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if c.stageRdr.Stats().Rebalances > 0 {
			c.stageUp.Store(true)
		}
		if c.idRdr != nil && c.idRdr.Stats().Rebalances > 0 {
			c.idUp.Store(true)
		}
		if c.Ready() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// batchWork is one fetched batch on its way from the fetching half of loop to the
// writing half.
type batchWork struct {
	msgs      []kafka.Message
	finish    func(context.Context) error // writes the batch durably
	fetched   time.Duration               // from the first fetch to a full batch
	fetchedAt time.Time                   // when the batch was full
}

// loop fetches batches of up to batch_size messages (or whatever arrived within
// batch_wait of the first), processes each and commits it. It runs in two halves joined
// by a queue of one batch: the fetching half fetches batch N+1 and runs prepare on it
// (stage changes: decoding, planning and the identity lookup; identity captures:
// decoding, hashing and starting their idempotent writes) while the writing half
// finishes batch N (its durable writes end) and then commits it. Batches are finished and
// committed one at a time, in fetch order, so offsets advance in order per partition and
// never before the batch's durable writes returned nil.
func (c *Consumer) loop(ctx context.Context, r *kafka.Reader, up *atomic.Bool, what string, prepare func(context.Context, []kafka.Message) func(context.Context) error) error {
	log := c.log.Named(what)
	queue := make(chan batchWork, 1)
	failed := make(chan struct{}) // closed when the writing half stops on an error
	fetchCtx, cancelFetch := context.WithCancel(ctx)
	defer cancelFetch()
	fetchErr := make(chan error, 1)
	go func() {
		defer close(queue)
		fetchErr <- c.fetchBatches(fetchCtx, r, up, what, prepare, queue, failed)
	}()

	// The writing half: finish batch N, wait for batch N-1's commit, start N's commit and
	// go on with N+1 while it runs. A commit starts only after its batch's write and the
	// previous commit returned, so offsets still advance in order and only over rows
	// already in the store.
	var (
		err     error
		pending <-chan error // the previous batch's commit while it runs
	)
	waitCommit := func() error {
		if pending == nil {
			return nil
		}
		err := <-pending
		pending = nil
		return err
	}
	for w := range queue {
		if err = c.finishBatch(ctx, w); err != nil {
			break
		}
		if err = waitCommit(); err != nil {
			break
		}
		pending = c.commitBatch(ctx, r, log, w)
	}
	if cerr := waitCommit(); err == nil {
		err = cerr
	}
	if err != nil {
		close(failed)
		cancelFetch()
		for range queue { // the fetching half stops at its next fetch or send
		}
		<-fetchErr
		return fmt.Errorf("%s: %w", what, err)
	}
	return <-fetchErr
}

// fetchBatches is loop's fetching half: it fills batches and queues them prepared until
// ctx ends (the batch in hand is still queued: the work is bounded, and committing it
// saves a redelivery), a fetch fails (its error is returned) or failed is closed.
func (c *Consumer) fetchBatches(ctx context.Context, r *kafka.Reader, up *atomic.Bool, what string,
	prepare func(context.Context, []kafka.Message) func(context.Context) error, queue chan<- batchWork, failed <-chan struct{}) error {
	for {
		if r == c.stageRdr && c.idBacklog != nil {
			if held := c.idBacklog.yield(ctx, int64(4*c.cfg.BatchSize)); held > 0 {
				c.deps.Metrics.addYielded(held.Seconds())
			}
		}
		fetchStart := time.Now()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: fetch: %w", what, err)
		}
		up.Store(true)
		// A fresh slice per batch: the writing half may still hold the previous one.
		batch := make([]kafka.Message, 0, c.cfg.BatchSize)
		batch = append(batch, m)
		fill, cancel := context.WithTimeout(ctx, c.cfg.BatchWait)
		for len(batch) < c.cfg.BatchSize {
			m, err := r.FetchMessage(fill)
			if err != nil {
				break // batch_wait elapsed, ctx cancelled (the batch in hand is still finished) or a reader error (next fetch reports it)
			}
			batch = append(batch, m)
		}
		cancel()
		if r == c.idRdr {
			c.idBacklog.note(batch)
		}
		fetched := time.Since(fetchStart)
		w := batchWork{msgs: batch, fetched: fetched, fetchedAt: time.Now()}
		w.finish = prepare(ctx, batch)
		select {
		case queue <- w:
		case <-failed:
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// finishBatch writes one batch durably, even when ctx was cancelled meanwhile (bounded by
// the drain timeout).
func (c *Consumer) finishBatch(ctx context.Context, w batchWork) error {
	work, cancelWork := context.WithTimeout(context.WithoutCancel(ctx), c.drainTimeout)
	defer cancelWork()
	return w.finish(work)
}

// commitBatch commits the offsets of a batch already written, in the background (bounded
// by the drain timeout); the channel gets the result.
func (c *Consumer) commitBatch(ctx context.Context, r *kafka.Reader, log *zap.Logger, w batchWork) <-chan error {
	done := make(chan error, 1)
	go func() {
		work, cancelWork := context.WithTimeout(context.WithoutCancel(ctx), c.drainTimeout)
		defer cancelWork()
		start := time.Now()
		if err := r.CommitMessages(work, lastPerPartition(w.msgs)...); err != nil {
			done <- fmt.Errorf("commit: %w", err)
			return
		}
		c.deps.Metrics.observeBatch(w.msgs[0].Topic, time.Since(w.fetchedAt).Seconds())
		c.recordConsumed(w.msgs)
		if ce := log.Check(zap.DebugLevel, "batch committed"); ce != nil {
			ce.Write(zap.Int("messages", len(w.msgs)), zap.Duration("fetch", w.fetched), zap.Duration("commit", time.Since(start)),
				zap.Duration("since_fetched", time.Since(w.fetchedAt)))
		}
		done <- nil
	}()
	return done
}

// recordConsumed counts a committed batch per topic and sets each partition's lag from its
// last message's high watermark.
func (c *Consumer) recordConsumed(batch []kafka.Message) {
	m := c.deps.Metrics
	if m == nil {
		return
	}
	byTopic := map[string]int{}
	for i := range batch {
		byTopic[batch[i].Topic]++
	}
	for t, n := range byTopic {
		m.addConsumed(t, n)
	}
	for _, last := range lastPerPartition(batch) {
		m.setLag(last.Topic, last.Partition, last.HighWaterMark-last.Offset-1)
	}
}

// sweep periodically gives up on conversions that waited longer than awaiting_timeout.
func (c *Consumer) sweep(ctx context.Context) error {
	t := time.NewTicker(c.cfg.SweepInterval)
	defer t.Stop()
	for {
		if _, err := c.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("sweep failed; retrying next interval", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// SweepOnce marks every conversion created more than awaiting_timeout ago and still
// awaiting identity as unmatched (reason no_identifier) and returns how many.
func (c *Consumer) SweepOnce(ctx context.Context) (int, error) {
	n, err := c.deps.Store.ExpireAwaiting(ctx, c.deps.Now().Add(-c.cfg.AwaitingTimeout), ReasonNoIdentifier)
	if err != nil {
		return 0, fmt.Errorf("expire awaiting: %w", err)
	}
	if n > 0 {
		c.log.Info("conversions unmatched: no identifier arrived in time", zap.Int("count", n), zap.Duration("awaiting_timeout", c.cfg.AwaitingTimeout))
		c.deps.Metrics.addExpired(n)
	}
	return n, nil
}
