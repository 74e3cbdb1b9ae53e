package replay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
)

// KafkaOptions says which time range of which stage topics to replay.
type KafkaOptions struct {
	Options
	// Topics are configured stage topics; empty means every stage topic.
	Topics []string
	// From and To bound the message timestamps replayed: From <= t < To. Each partition is
	// read from the first offset at or after From to the first offset at or after To; a
	// zero To means the partition's end when the replay starts.
	From, To time.Time
}

// Kafka replays a time range of stage topics through the pipeline. It reads each partition
// directly (no consumer group: the live group's offsets never move), Concurrency
// partitions at a time, in batches of the configured batch size.
//
// On cancellation every partition finishes the batch in hand and stops; the summary (with
// Interrupted set and each partition's Reached offset) is returned with ctx's error. Any
// other error is returned with the summary of what was done until then.
func (r *Replayer) Kafka(ctx context.Context, opts KafkaOptions) (*Summary, error) {
	kc := r.cfg.Kafka
	if len(kc.Brokers) == 0 {
		return nil, errors.New("replay: kafka.brokers is empty")
	}
	formats := make(map[string]string, len(kc.StageTopics))
	var all []string
	for _, t := range kc.StageTopics {
		f := t.Format
		if f == "" {
			f = crm.FormatCanonical
		}
		formats[t.Topic] = f
		all = append(all, t.Topic)
	}
	topics := opts.Topics
	if len(topics) == 0 {
		topics = all
	}
	for _, t := range topics {
		if _, ok := formats[t]; !ok {
			return nil, fmt.Errorf("replay: topic %q is not a configured stage topic (kafka.stage_topics: %s)", t, strings.Join(all, ", "))
		}
	}
	if len(topics) == 0 {
		return nil, errors.New("replay: no stage topic configured (kafka.stage_topics)")
	}
	if !opts.To.IsZero() && !opts.From.Before(opts.To) {
		return nil, fmt.Errorf("replay: from (%s) must be before to (%s)", opts.From.Format(time.RFC3339), opts.To.Format(time.RFC3339))
	}

	sum := &Summary{Source: "kafka", Topics: topics, From: opts.From, To: opts.To}
	u, err := r.newRun(opts.Options, formats, sum)
	if err != nil {
		return nil, err
	}
	var ranges []PartitionProgress
	for _, t := range topics {
		rs, err := r.offsetRanges(ctx, t, opts.From, opts.To)
		if err != nil {
			return nil, err
		}
		ranges = append(ranges, rs...)
	}
	var total int64
	for _, pr := range ranges {
		total += pr.End - pr.Start
	}
	sum.Partitions = ranges
	r.log.Info("replay starting", zap.Strings("topics", topics), zap.Int("partitions", len(ranges)),
		zap.Int64("messages", total), zap.Bool("dry_run", opts.DryRun))
	if opts.Progress != nil {
		opts.Progress(0, total)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Concurrency)
	for i := range ranges {
		if ranges[i].End <= ranges[i].Start {
			continue
		}
		if gctx.Err() != nil {
			break
		}
		pr := ranges[i]
		g.Go(func() error { return r.readPartition(gctx, u, i, pr, opts, total) })
	}
	err = g.Wait()
	sum = u.finish(ctx)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return sum, err
}

// offsetRanges finds, per partition of topic, the first offset at or after from and the
// end: the first offset at or after to, or the partition's end offset now.
func (r *Replayer) offsetRanges(ctx context.Context, topic string, from, to time.Time) ([]PartitionProgress, error) {
	kc := r.cfg.Kafka
	dialer := &kafka.Dialer{ClientID: clientID(kc), Timeout: 10 * time.Second}
	var parts []kafka.Partition
	var err error
	for _, b := range kc.Brokers {
		var conn *kafka.Conn
		conn, err = dialer.DialContext(ctx, "tcp", b)
		if err != nil {
			continue
		}
		parts, err = conn.ReadPartitions(topic)
		_ = conn.Close()
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("replay: partitions of %s: %w", topic, err)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("replay: topic %s has no partitions", topic)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].ID < parts[j].ID })
	out := make([]PartitionProgress, 0, len(parts))
	for _, p := range parts {
		pr, err := partitionRange(ctx, dialer, kc.Brokers, topic, p.ID, from, to)
		if err != nil {
			return nil, err
		}
		out = append(out, pr)
	}
	return out, nil
}

func partitionRange(ctx context.Context, dialer *kafka.Dialer, brokers []string, topic string, partition int, from, to time.Time) (PartitionProgress, error) {
	var lastErr error
	for _, b := range brokers {
		conn, err := dialer.DialLeader(ctx, "tcp", b, topic, partition)
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
			return PartitionProgress{}, fmt.Errorf("replay: offsets of %s/%d: %w", topic, partition, err)
		}
		at := func(t time.Time) (int64, error) {
			off, err := conn.ReadOffset(t)
			if err != nil {
				return 0, fmt.Errorf("replay: offset of %s/%d at %s: %w", topic, partition, t.Format(time.RFC3339), err)
			}
			if off < 0 || off > last { // no message at or after t
				return last, nil
			}
			return max(off, first), nil
		}
		pr := PartitionProgress{Topic: topic, Partition: partition, Start: first, End: last}
		if !from.IsZero() {
			if pr.Start, err = at(from); err != nil {
				return PartitionProgress{}, err
			}
		}
		if !to.IsZero() {
			if pr.End, err = at(to); err != nil {
				return PartitionProgress{}, err
			}
		}
		pr.End = max(pr.End, pr.Start)
		pr.Reached = pr.Start
		return pr, nil
	}
	return PartitionProgress{}, fmt.Errorf("replay: leader of %s/%d: %w", topic, partition, lastErr)
}

// readPartition reads [Start, End) of one partition in batches and processes each, keeping
// the messages whose timestamp is in [From, To). After each batch the partition's Reached
// offset moves past it. Cancellation stops it after the batch in hand, returning nil.
func (r *Replayer) readPartition(ctx context.Context, u *run, idx int, pr PartitionProgress, opts KafkaOptions, total int64) error {
	kc := r.cfg.Kafka
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       kc.Brokers,
		Topic:         pr.Topic,
		Partition:     pr.Partition,
		Dialer:        &kafka.Dialer{ClientID: clientID(kc), Timeout: 10 * time.Second},
		QueueCapacity: kc.BatchSize,
		MinBytes:      kc.MinBytes,
		MaxBytes:      kc.MaxBytes,
		MaxWait:       500 * time.Millisecond,
		ErrorLogger:   consumer.KafkaErrorLogger(r.log.Named("kafka")),
	})
	defer rd.Close()
	if err := rd.SetOffset(pr.Start); err != nil {
		return fmt.Errorf("replay: %s/%d: %w", pr.Topic, pr.Partition, err)
	}
	batch := make([]kafka.Message, 0, kc.BatchSize)
	next := pr.Start
	for next < pr.End {
		if ctx.Err() != nil {
			return nil
		}
		batch = batch[:0]
		var readN, skipped int64
		var fetchErr error
		for next < pr.End && len(batch) < kc.BatchSize {
			m, err := rd.FetchMessage(ctx)
			if err != nil {
				fetchErr = err
				break
			}
			if m.Offset >= pr.End {
				next = pr.End // a gap (compaction, transaction markers) up to the end
				break
			}
			next = m.Offset + 1
			readN++
			if m.Time.Before(opts.From) || (!opts.To.IsZero() && !m.Time.Before(opts.To)) {
				skipped++
				continue
			}
			batch = append(batch, m)
		}
		st, err := u.process(ctx, batch)
		if err != nil {
			return fmt.Errorf("replay: %s/%d offsets before %d: %w", pr.Topic, pr.Partition, next, err)
		}
		reached := next
		u.account(st, readN, total, func(s *Summary) {
			s.Read += readN
			s.Skipped += skipped
			p := &s.Partitions[idx]
			p.Reached = reached
			p.Read += readN
			p.Skipped += skipped
		})
		if fetchErr != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("replay: read %s/%d at offset %d: %w", pr.Topic, pr.Partition, next, fetchErr)
		}
	}
	return nil
}

func clientID(kc consumer.Config) string {
	if kc.ClientID == "" {
		return "closedloop-replay"
	}
	return kc.ClientID + "-replay"
}
