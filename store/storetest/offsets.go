package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// counted is a stage count of one rule on day1, attributed to message offset off of
// partition p of topic "stages".
func counted(p int, off int64, rule string) store.StageCount {
	return store.StageCount{Day: day1, Source: "hubspot", Rule: rule, Count: 1, Topic: "stages", Partition: p, Offset: off}
}

var day1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func stageTotals(t *testing.T, s *store.Store) map[string]int {
	t.Helper()
	got, err := s.StageCounts(ctx(t), day1, day1.Add(24*time.Hour))
	require.NoError(t, err)
	out := map[string]int{}
	for _, c := range got {
		require.Empty(t, c.Topic, "stored counts carry no message")
		out[c.Rule] += c.Count
	}
	return out
}

// testConsumedOffsets: a batch's consumed offsets are stored with it, and its attributed
// stage counts are added only for messages past the partition's stored offset, so a
// redelivered batch (whole, in part, or cut differently) counts each message once.
func testConsumedOffsets(t *testing.T, open Opener) {
	s := open(t)
	got, err := s.ConsumedOffsets(ctx(t), []string{"stages"})
	require.NoError(t, err)
	require.Empty(t, got, "nothing consumed yet")

	first := store.Batch{
		Conversions: []store.Conversion{conv("a")},
		StageCounts: []store.StageCount{counted(0, 10, "won"), counted(0, 11, "won"), counted(0, 11, "mql"), counted(1, 5, "")},
		Offsets:     []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 12}, {Topic: "stages", Partition: 1, Next: 6}},
	}
	res, err := s.WriteBatch(ctx(t), first)
	require.NoError(t, err)
	require.Equal(t, 1, res.Created)
	require.Zero(t, res.SkippedCounts)
	require.Equal(t, map[string]int{"won": 2, "mql": 1, "": 1}, stageTotals(t, s))
	got, err = s.ConsumedOffsets(ctx(t), []string{"stages", "other"})
	require.NoError(t, err)
	require.Equal(t, []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 12}, {Topic: "stages", Partition: 1, Next: 6}}, got)

	res, err = s.WriteBatch(ctx(t), first)
	require.NoError(t, err, "a redelivered batch is not an error")
	require.Equal(t, store.BatchResult{Existing: 1, SkippedCounts: 4}, res)
	require.Equal(t, map[string]int{"won": 2, "mql": 1, "": 1}, stageTotals(t, s), "a redelivered batch counts nothing")

	// Redelivered cut differently: offset 11 again, then 12 and 13 new; an unattributed
	// count is always added.
	res, err = s.WriteBatch(ctx(t), store.Batch{
		StageCounts: []store.StageCount{counted(0, 11, "won"), counted(0, 12, "won"), counted(0, 13, ""),
			{Day: day1, Source: "hubspot", Rule: "won", Count: 5}},
		Offsets: []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 14}},
	})
	require.NoError(t, err)
	require.Equal(t, 1, res.SkippedCounts)
	require.Equal(t, map[string]int{"won": 8, "mql": 1, "": 2}, stageTotals(t, s))

	// A late writer of an older batch never moves an offset back.
	_, err = s.WriteBatch(ctx(t), store.Batch{
		StageCounts: []store.StageCount{counted(0, 3, "won")},
		Offsets:     []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 4}},
	})
	require.NoError(t, err)
	got, err = s.ConsumedOffsets(ctx(t), []string{"stages"})
	require.NoError(t, err)
	require.Equal(t, []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 14}, {Topic: "stages", Partition: 1, Next: 6}}, got)
	require.Equal(t, map[string]int{"won": 8, "mql": 1, "": 2}, stageTotals(t, s))
}

// testConsumedOffsetsInvalid: a count naming a message the batch's offsets do not cover,
// or an offset without a topic, is refused and nothing is written.
func testConsumedOffsetsInvalid(t *testing.T, open Opener) {
	s := open(t)
	for _, tc := range []struct {
		name  string
		b     store.Batch
		field string
	}{
		{"count of a partition without an offset", store.Batch{
			StageCounts: []store.StageCount{counted(0, 1, "won"), counted(2, 1, "won")},
			Offsets:     []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 2}},
		}, "stage_counts[1].offset"},
		{"count at or past the batch's next offset", store.Batch{
			StageCounts: []store.StageCount{counted(0, 2, "won")},
			Offsets:     []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: 2}},
		}, "stage_counts[0].offset"},
		{"offset without a topic", store.Batch{
			Offsets: []store.ConsumedOffset{{Partition: 0, Next: 2}},
		}, "offsets[0].topic"},
		{"negative next offset", store.Batch{
			Offsets: []store.ConsumedOffset{{Topic: "stages", Partition: 0, Next: -1}},
		}, "offsets[0].next"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.b.Conversions = []store.Conversion{conv("a")}
			_, err := s.WriteBatch(ctx(t), tc.b)
			var inv *store.InvalidError
			require.ErrorAs(t, err, &inv)
			require.Equal(t, tc.field, inv.Field)
			_, err = s.Get(ctx(t), "a")
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	}
	got, err := s.ConsumedOffsets(ctx(t), []string{"stages", ""})
	require.NoError(t, err)
	require.Empty(t, got)
	require.Empty(t, stageTotals(t, s))
}

// testConsumedOffsetsConcurrent: the same messages written by several writers at once (a
// consumer group rebalancing hands a partition to a new member while the old one still
// writes) are counted once, and no writer fails.
func testConsumedOffsetsConcurrent(t *testing.T, open Opener) {
	s := open(t)
	const writers, batches, per = 4, 10, 5
	concurrently(t, writers, func(w int) error {
		for b := range batches {
			var counts []store.StageCount
			for i := range per {
				counts = append(counts, counted(b%2, int64(b*per+i), "won"))
			}
			_, err := s.WriteBatch(ctx(t), store.Batch{
				Conversions: []store.Conversion{conv(fmt.Sprint("k", b))},
				StageCounts: counts,
				Offsets:     []store.ConsumedOffset{{Topic: "stages", Partition: b % 2, Next: int64((b + 1) * per)}},
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	// Partition 0 got the even batches, partition 1 the odd ones, each in rising order, so
	// a writer's batch is skipped only when another writer counted it already.
	total := stageTotals(t, s)["won"]
	require.Equal(t, batches*per, total, "every message counted exactly once")
}
