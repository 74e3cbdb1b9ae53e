package consumer

import (
	"context"
	"errors"
	"fmt"
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
	// drainTimeout bounds finishing the batch in hand once ctx is cancelled.
	drainTimeout time.Duration
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
		Formats: formats, Mapping: deps.Mapping, Normalizer: deps.Normalizer, Store: deps.Store,
		DeadLetters: c.dlq, DeadLetterTopic: cfg.DeadLetterTopic, Metrics: deps.Metrics,
		Log: c.log.Named("stages"),
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
		return c.loop(gctx, c.stageRdr, &c.stageUp, "stage changes", func(ctx context.Context, msgs []kafka.Message) error {
			_, err := c.stages.Process(ctx, msgs)
			return err
		})
	})
	if c.idRdr != nil {
		g.Go(func() error {
			return c.loop(gctx, c.idRdr, &c.idUp, "identities", func(ctx context.Context, msgs []kafka.Message) error {
				_, err := c.ids.Process(ctx, msgs)
				return err
			})
		})
	}
	g.Go(func() error { return c.sweep(gctx) })
	g.Go(func() error { c.watchJoin(gctx); return nil })
	err := g.Wait()
	return err
}

// Close releases the readers and the dead-letter producer New created. Call it after Run
// returned.
func (c *Consumer) Close() error {
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

// loop fetches batches of up to batch_size messages (or whatever arrived within
// batch_wait of the first), processes each and commits it. Messages are never committed
// before process returned nil.
func (c *Consumer) loop(ctx context.Context, r *kafka.Reader, up *atomic.Bool, what string, process func(context.Context, []kafka.Message) error) error {
	log := c.log.Named(what)
	batch := make([]kafka.Message, 0, c.cfg.BatchSize)
	for {
		batch = batch[:0]
		fetchStart := time.Now()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: fetch: %w", what, err)
		}
		up.Store(true)
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

		// Finish the batch in hand even when ctx was cancelled meanwhile: the work is
		// bounded, and committing it saves a redelivery.
		work, cancelWork := context.WithTimeout(context.WithoutCancel(ctx), c.drainTimeout)
		start := time.Now()
		fetched := start.Sub(fetchStart)
		err = process(work, batch)
		processed := time.Since(start)
		if err == nil {
			err = r.CommitMessages(work, lastPerPartition(batch)...)
			if err != nil {
				err = fmt.Errorf("commit: %w", err)
			}
		}
		cancelWork()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		topic := batch[0].Topic
		c.deps.Metrics.observeBatch(topic, time.Since(start).Seconds())
		c.recordConsumed(batch)
		if ce := log.Check(zap.DebugLevel, "batch committed"); ce != nil {
			ce.Write(zap.Int("messages", len(batch)), zap.Duration("fetch", fetched), zap.Duration("process", processed),
				zap.Duration("took", time.Since(start)))
		}
		if ctx.Err() != nil {
			return nil
		}
	}
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
