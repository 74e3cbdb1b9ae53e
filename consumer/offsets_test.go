package consumer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// stageTotals reads today's stored stage counts as "source/rule" → count.
func stageTotals(t *testing.T, s *store.Store) map[string]int {
	t.Helper()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	counts, err := s.StageCounts(context.Background(), today.Add(-48*time.Hour), today.Add(48*time.Hour))
	require.NoError(t, err)
	out := map[string]int{}
	for _, c := range counts {
		out[c.Source+"/"+c.Rule] += c.Count
	}
	return out
}

// TestPipelineCountsEachMessageOnce: a batch redelivered after its store write (the
// process died before the Kafka commit), whole or cut differently, adds no stage count,
// rule match, dead letter or metric a second time; the messages past the stored offsets
// still count.
func TestPipelineCountsEachMessageOnce(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{store.DriverSQLite, store.DriverPostgres} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openSQLite(t)
			if dialect == store.DriverPostgres {
				s = openPostgres(t)
			}
			dlq := &recordingWriter{}
			metrics := NewMetrics(prometheus.NewRegistry())
			p := newTestPipeline(t, s, dlq, metrics)
			won := func(p int, off int64, id string) kafka.Message {
				return msgAt("crm", p, off, canonical(id, "closed-won", "", t0, `,"click_ids":{"gclid":"G"}`))
			}
			first := []kafka.Message{
				won(0, 10, "D-1"),
				msgAt("crm", 0, 11, canonical("D-2", "negotiation", "", t0, "")),
				msgAt("crm", 0, 12, []byte(`{"source":`)), // dead-lettered
				won(1, 3, "D-3"),
			}
			st, err := p.Process(ctx, first)
			require.NoError(t, err)
			require.Equal(t, 3, st.StageChanges)
			require.Equal(t, 1, st.DeadLettered)
			want := map[string]int{"relay/won": 2, "relay/": 1}
			require.Equal(t, want, stageTotals(t, s))
			require.Len(t, dlq.written(), 1)
			offsets, err := s.ConsumedOffsets(ctx, []string{"crm"})
			require.NoError(t, err)
			require.Equal(t, []store.ConsumedOffset{{Topic: "crm", Partition: 0, Next: 13}, {Topic: "crm", Partition: 1, Next: 4}}, offsets)

			// The same batch again: nothing counted, nothing dead-lettered.
			st, err = p.Process(ctx, first)
			require.NoError(t, err)
			require.Equal(t, Stats{Messages: 4, Planned: 4, Ready: 2, Awaiting: 2, Existing: 4}, st)
			require.Equal(t, want, stageTotals(t, s), "a redelivered batch counts nothing")
			require.Len(t, dlq.written(), 1, "a redelivered batch dead-letters nothing")

			// Cut differently: 11 and 12 again with 13 (bad) and 14 new, and partition 1's
			// next message.
			st, err = p.Process(ctx, []kafka.Message{
				msgAt("crm", 0, 11, canonical("D-2", "negotiation", "", t0, "")),
				msgAt("crm", 0, 12, []byte(`{"source":`)),
				msgAt("crm", 0, 13, []byte(`not json`)),
				won(0, 14, "D-4"),
				won(1, 4, "D-1"), // a new message repeating a stage change counts: it was seen again
			})
			require.NoError(t, err)
			require.Equal(t, 2, st.StageChanges)
			require.Equal(t, 1, st.DeadLettered)
			want = map[string]int{"relay/won": 4, "relay/": 1}
			require.Equal(t, want, stageTotals(t, s))
			require.Len(t, dlq.written(), 2)
			require.Equal(t, "13", headerMap(dlq.written()[1].Headers)[HeaderSourceOffset])

			require.Equal(t, 4.0, testutil.ToFloat64(metrics.stageChanges.WithLabelValues("relay", OutcomeMatched)))
			require.Equal(t, 1.0, testutil.ToFloat64(metrics.stageChanges.WithLabelValues("relay", OutcomeUnmatched)))
			require.Equal(t, 2.0, testutil.ToFloat64(metrics.deadLettered.WithLabelValues("crm", ReasonUndecodable)))
			require.Len(t, listAll(t, s), 6, "D-1, D-3 and D-4 on both destinations, each written once")
		})
	}
}

// TestPipelineBatchOfDeadLettersOnlyMovesTheOffsets: a batch with nothing to store still
// moves its offsets, so its dead letters are not written again on redelivery.
func TestPipelineBatchOfDeadLettersOnlyMovesTheOffsets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{}
	p := newTestPipeline(t, s, dlq, nil)
	batch := []kafka.Message{msgAt("crm", 2, 7, []byte(`{`)), msgAt("crm", 2, 8, []byte(`[`))}
	for i := range 3 {
		_, err := p.Process(ctx, batch)
		require.NoError(t, err, fmt.Sprint("delivery ", i))
	}
	require.Len(t, dlq.written(), 2)
	offsets, err := s.ConsumedOffsets(ctx, []string{"crm"})
	require.NoError(t, err)
	require.Equal(t, []store.ConsumedOffset{{Topic: "crm", Partition: 2, Next: 9}}, offsets)
}
