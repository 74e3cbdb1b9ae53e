package store

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// ConsumedOffset is how far the stage-change consumer has written one Kafka partition:
// every message before Next is in the store, its conversions, identities and stage counts
// included.
type ConsumedOffset struct {
	Topic     string
	Partition int
	Next      int64 // the offset of the first message not yet written
}

// topicPartition names one Kafka partition.
type topicPartition struct {
	topic     string
	partition int
}

// ConsumedOffsets returns the stored consumed offset of every partition of topics that
// has one, ordered by topic and partition. A partition without one has had nothing
// written (read it as Next 0).
func (s *Store) ConsumedOffsets(ctx context.Context, topics []string) ([]ConsumedOffset, error) {
	r, err := s.db.query(ctx, `SELECT topic, kafka_partition, next_offset FROM consumed_offsets
		WHERE `+s.in("topic", 1)+` ORDER BY topic, kafka_partition`, s.list(topics))
	if err != nil {
		return nil, fmt.Errorf("store: consumed offsets: %w", err)
	}
	out, err := collect(r, func(r rows) (ConsumedOffset, error) {
		var o ConsumedOffset
		var next int
		err := r.Scan(&o.Topic, intScan{&o.Partition}, intScan{&next})
		o.Next = int64(next)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: consumed offsets: %w", err)
	}
	return out, nil
}

// batchOffsets validates b.Offsets and the message positions of b.StageCounts: every
// attributed count lies before its partition's Next. It returns each partition's Next.
func batchOffsets(b Batch) (map[topicPartition]int64, error) {
	next := make(map[topicPartition]int64, len(b.Offsets))
	for i, o := range b.Offsets {
		switch {
		case o.Topic == "":
			return nil, invalid(fmt.Sprintf("offsets[%d].topic", i), "required")
		case o.Partition < 0:
			return nil, invalid(fmt.Sprintf("offsets[%d].partition", i), "must not be negative, got %d", o.Partition)
		case o.Next < 0:
			return nil, invalid(fmt.Sprintf("offsets[%d].next", i), "must not be negative, got %d", o.Next)
		}
		tp := topicPartition{o.Topic, o.Partition}
		next[tp] = max(next[tp], o.Next)
	}
	for i, c := range b.StageCounts {
		if c.Topic == "" {
			continue
		}
		n, ok := next[topicPartition{c.Topic, c.Partition}]
		if !ok {
			return nil, invalid(fmt.Sprintf("stage_counts[%d].offset", i), "partition %d of topic %q has no entry in offsets", c.Partition, c.Topic)
		}
		if c.Offset < 0 || c.Offset >= n {
			return nil, invalid(fmt.Sprintf("stage_counts[%d].offset", i), "must be in [0, %d), the batch's offsets of partition %d of topic %q, got %d",
				n, c.Partition, c.Topic, c.Offset)
		}
	}
	return next, nil
}

// advanceOffsets locks the stored consumed offsets of the given partitions (in a fixed
// order, so concurrent batches never deadlock on them), moves each forward to its new
// value (never back) and returns the values stored before. A partition seen for the first
// time starts at 0. Concurrent transactions on the same partition are serialized here: the
// second reads the offset the first committed.
func (s *Store) advanceOffsets(ctx context.Context, q querier, next map[topicPartition]int64, now time.Time) (map[topicPartition]int64, error) {
	tps := make([]topicPartition, 0, len(next))
	for tp := range next {
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool {
		if tps[i].topic != tps[j].topic {
			return tps[i].topic < tps[j].topic
		}
		return tps[i].partition < tps[j].partition
	})
	lock := ""
	if s.pg {
		lock = " FOR UPDATE"
	}
	prior := make(map[topicPartition]int64, len(tps))
	for _, tp := range tps {
		if _, err := q.exec(ctx, `INSERT INTO consumed_offsets (topic, kafka_partition, next_offset, updated_at)
			VALUES ($1, $2, 0, $3) ON CONFLICT (topic, kafka_partition) DO NOTHING`, tp.topic, tp.partition, s.ts(now)); err != nil {
			return nil, err
		}
		r, err := q.query(ctx, `SELECT next_offset FROM consumed_offsets WHERE topic = $1 AND kafka_partition = $2`+lock,
			tp.topic, tp.partition)
		if err != nil {
			return nil, err
		}
		got, err := collect(r, func(r rows) (int, error) { var n int; return n, r.Scan(intScan{&n}) })
		if err != nil {
			return nil, err
		}
		if len(got) != 1 {
			return nil, fmt.Errorf("consumed offset of partition %d of %s: %d rows", tp.partition, tp.topic, len(got))
		}
		prior[tp] = int64(got[0])
		if next[tp] > prior[tp] {
			if _, err := q.exec(ctx, `UPDATE consumed_offsets SET next_offset = $3, updated_at = $4
				WHERE topic = $1 AND kafka_partition = $2`, tp.topic, tp.partition, next[tp], s.ts(now)); err != nil {
				return nil, err
			}
		}
	}
	return prior, nil
}

// uncounted drops the attributed counts whose message lies before its partition's prior
// consumed offset; it returns the rest and how many it dropped.
func uncounted(in []StageCount, prior map[topicPartition]int64) ([]StageCount, int) {
	out := in[:0:0]
	skipped := 0
	for _, c := range in {
		if c.Topic != "" && c.Offset < prior[topicPartition{c.Topic, c.Partition}] {
			skipped++
			continue
		}
		out = append(out, c)
	}
	return out, skipped
}
