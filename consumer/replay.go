package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/pii"
)

// ReplayStore is what a replay needs from the store.
type ReplayStore interface {
	Store
	KeyChecker
}

// ReplayOptions says what to replay.
type ReplayOptions struct {
	// Topic is a configured stage topic or the identity topic.
	Topic string
	// From and To bound the message timestamps replayed: From <= t < To. A zero To means
	// up to the end of each partition as it was when the replay started.
	From, To time.Time
	// Destinations, when not empty, keeps only conversions for these destinations.
	Destinations []string
	// DryRun reads and plans everything and reports what would be created, writing
	// nothing: no row, no identity, no stage count, no dead letter.
	DryRun bool
	// Progress, when set, is called after each batch with the messages read so far and
	// the total in the offset range (an estimate when timestamps are out of order). It
	// may be called from several goroutines, never concurrently.
	Progress func(read, total int64)
}

// ReplaySummary reports a replay.
type ReplaySummary struct {
	Topic      string
	Partitions int
	// Read counts messages read in the offset range; Skipped those outside [From, To).
	Read    int64
	Skipped int64
	// Stats sums the pipeline's counts. In a dry run Created is what a real replay would
	// create and Existing what it would leave alone.
	Stats Stats
	// Identities counts identity captures (a replay of the identity topic); Invalid the
	// messages that failed to decode there.
	Identities int
	Invalid    int
	DryRun     bool
}

// Replayer reads a topic's partitions over a time range, without a consumer group (it
// never commits offsets or disturbs the live consumer), through the same pipeline as the
// live consumer. Rows it creates are marked Replay; conversion keys make a replay never
// create a conversion twice.
type Replayer struct {
	cfg   Config
	deps  ReplayDeps
	log   *zap.Logger
	conc  int
	retry backoff
}

// ReplayDeps are a replay's collaborators.
type ReplayDeps struct {
	Store      ReplayStore // required
	Mapping    func() *crm.Mapping
	Normalizer pii.Normalizer
	Log        *zap.Logger
}

// NewReplayer returns a Replayer for the topics of cfg.
func NewReplayer(cfg Config, deps ReplayDeps) (*Replayer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("consumer: replay needs kafka.brokers")
	}
	if deps.Store == nil || deps.Mapping == nil {
		return nil, errors.New("consumer: ReplayDeps.Store and ReplayDeps.Mapping are required")
	}
	r := &Replayer{cfg: cfg.withDefaults(), deps: deps, log: deps.Log, conc: 2, retry: defaultBackoff}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	return r, nil
}

// partitionRange is the offsets [start, end) of one partition to read.
type partitionRange struct {
	partition  int
	start, end int64
}

// Replay reads opts.Topic from opts.From to opts.To and processes what it reads.
func (r *Replayer) Replay(ctx context.Context, opts ReplayOptions) (ReplaySummary, error) {
	sum := ReplaySummary{Topic: opts.Topic, DryRun: opts.DryRun}
	format, isStage := r.cfg.formatOf(opts.Topic)
	isIdentity := opts.Topic != "" && opts.Topic == r.cfg.IdentityTopic
	if !isStage && !isIdentity {
		return sum, fmt.Errorf("replay: %q is neither a configured stage topic nor the identity topic", opts.Topic)
	}
	if !opts.To.IsZero() && !opts.From.Before(opts.To) {
		return sum, fmt.Errorf("replay: from (%s) must be before to (%s)", opts.From.Format(time.RFC3339), opts.To.Format(time.RFC3339))
	}
	ranges, err := r.offsetRanges(ctx, opts)
	if err != nil {
		return sum, err
	}
	sum.Partitions = len(ranges)
	var total int64
	for _, pr := range ranges {
		total += pr.end - pr.start
	}

	var stages *Pipeline
	var ids *IdentityPipeline
	if isStage {
		stages, err = NewPipeline(PipelineConfig{
			Formats: map[string]string{opts.Topic: format}, Mapping: r.deps.Mapping, Normalizer: r.deps.Normalizer,
			Store: r.deps.Store, SkipDeadLetters: true, Replay: true, Destinations: opts.Destinations,
			Log: r.log.Named("replay"),
		})
	} else {
		ids, err = NewIdentityPipeline(IdentityPipelineConfig{
			Normalizer: r.deps.Normalizer, Store: r.deps.Store, SkipDeadLetters: true, Log: r.log.Named("replay"),
		})
	}
	if err != nil {
		return sum, err
	}

	var mu sync.Mutex // guards sum and progress
	var read int64
	process := func(ctx context.Context, batch []kafka.Message, readN, skipped int64) error {
		var st Stats
		var ist IdentityStats
		var err error
		switch {
		case len(batch) == 0:
		case stages != nil && opts.DryRun:
			st, err = stages.DryRun(ctx, batch, r.deps.Store)
		case stages != nil:
			st, err = stages.Process(ctx, batch)
		case opts.DryRun:
			ist = dryRunIdentities(batch, r.deps.Normalizer)
		default:
			ist, err = ids.Process(ctx, batch)
		}
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		sum.Stats.add(st)
		sum.Identities += ist.Captures
		sum.Invalid += ist.DeadLettered
		sum.Read += readN
		sum.Skipped += skipped
		read += readN
		if opts.Progress != nil {
			opts.Progress(read, total)
		}
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conc)
	for _, pr := range ranges {
		if pr.end <= pr.start {
			continue
		}
		g.Go(func() error { return r.readPartition(gctx, opts, pr, process) })
	}
	if err := g.Wait(); err != nil {
		return sum, err
	}
	if opts.Progress != nil && read == 0 {
		opts.Progress(0, total)
	}
	return sum, nil
}

// offsetRanges finds, per partition, the first offset at or after From and the end: the
// first offset at or after To, or the partition's end offset now.
func (r *Replayer) offsetRanges(ctx context.Context, opts ReplayOptions) ([]partitionRange, error) {
	dialer := &kafka.Dialer{ClientID: r.cfg.ClientID, Timeout: 10 * time.Second}
	var parts []kafka.Partition
	var err error
	for _, b := range r.cfg.Brokers {
		var conn *kafka.Conn
		conn, err = dialer.DialContext(ctx, "tcp", b)
		if err != nil {
			continue
		}
		parts, err = conn.ReadPartitions(opts.Topic)
		_ = conn.Close()
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("replay: partitions of %s: %w", opts.Topic, err)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("replay: topic %s has no partitions", opts.Topic)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].ID < parts[j].ID })
	out := make([]partitionRange, 0, len(parts))
	for _, p := range parts {
		pr, err := r.partitionRange(ctx, dialer, opts, p.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, pr)
	}
	return out, nil
}

func (r *Replayer) partitionRange(ctx context.Context, dialer *kafka.Dialer, opts ReplayOptions, partition int) (partitionRange, error) {
	var lastErr error
	for _, b := range r.cfg.Brokers {
		conn, err := dialer.DialLeader(ctx, "tcp", b, opts.Topic, partition)
		if err != nil {
			lastErr = err
			continue
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		first, last, err := conn.ReadOffsets()
		if err != nil {
			return partitionRange{}, fmt.Errorf("replay: offsets of %s/%d: %w", opts.Topic, partition, err)
		}
		at := func(t time.Time) (int64, error) {
			off, err := conn.ReadOffset(t)
			if err != nil {
				return 0, fmt.Errorf("replay: offset of %s/%d at %s: %w", opts.Topic, partition, t.Format(time.RFC3339), err)
			}
			if off < 0 || off > last { // no message at or after t
				return last, nil
			}
			return max(off, first), nil
		}
		pr := partitionRange{partition: partition, start: first, end: last}
		if !opts.From.IsZero() {
			if pr.start, err = at(opts.From); err != nil {
				return partitionRange{}, err
			}
		}
		if !opts.To.IsZero() {
			if pr.end, err = at(opts.To); err != nil {
				return partitionRange{}, err
			}
		}
		return pr, nil
	}
	return partitionRange{}, fmt.Errorf("replay: leader of %s/%d: %w", opts.Topic, partition, lastErr)
}

// readPartition reads [start, end) of one partition in batches of batch_size and hands
// each to process with the messages whose timestamp is in [From, To).
func (r *Replayer) readPartition(ctx context.Context, opts ReplayOptions, pr partitionRange,
	process func(ctx context.Context, batch []kafka.Message, read, skipped int64) error) error {
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       r.cfg.Brokers,
		Topic:         opts.Topic,
		Partition:     pr.partition,
		Dialer:        &kafka.Dialer{ClientID: r.cfg.ClientID, Timeout: 10 * time.Second},
		QueueCapacity: r.cfg.BatchSize,
		MinBytes:      r.cfg.MinBytes,
		MaxBytes:      r.cfg.MaxBytes,
		MaxWait:       500 * time.Millisecond,
		ErrorLogger:   KafkaErrorLogger(r.log.Named("kafka.replay")),
	})
	defer rd.Close()
	if err := rd.SetOffset(pr.start); err != nil {
		return fmt.Errorf("replay: %s/%d: %w", opts.Topic, pr.partition, err)
	}
	batch := make([]kafka.Message, 0, r.cfg.BatchSize)
	next := pr.start
	for next < pr.end {
		batch = batch[:0]
		var readN, skipped int64
		for next < pr.end && len(batch) < r.cfg.BatchSize {
			m, err := rd.FetchMessage(ctx)
			if err != nil {
				return fmt.Errorf("replay: read %s/%d at offset %d: %w", opts.Topic, pr.partition, next, err)
			}
			next = m.Offset + 1
			if m.Offset >= pr.end {
				break
			}
			readN++
			if m.Time.Before(opts.From) || (!opts.To.IsZero() && !m.Time.Before(opts.To)) {
				skipped++
				continue
			}
			batch = append(batch, m)
		}
		if err := process(ctx, batch, readN, skipped); err != nil {
			return fmt.Errorf("replay: %s/%d: %w", opts.Topic, pr.partition, err)
		}
	}
	return nil
}

// dryRunIdentities counts what an identity replay would store, decoding only.
func dryRunIdentities(batch []kafka.Message, n pii.Normalizer) IdentityStats {
	st := IdentityStats{Messages: len(batch)}
	for _, m := range batch {
		if len(m.Value) > crm.MaxPayloadBytes {
			st.DeadLettered++
			continue
		}
		if _, err := identity.Decode(m.Value, n); err != nil {
			st.DeadLettered++
			continue
		}
		st.Captures++
	}
	return st
}
