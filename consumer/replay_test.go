package consumer

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
)

// produceAt writes msgs, keeping each one's Time as its record timestamp.
func produceAt(t *testing.T, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 500, BatchTimeout: 5 * time.Millisecond, Compression: kafka.Lz4, BatchBytes: 4 << 20, Transport: tr}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	for range 50 {
		if err = w.WriteMessages(ctx, msgs...); !errors.Is(err, kafka.UnknownTopicOrPartition) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err)
}

func TestReplayTimeRangeDryRunAndIdempotence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.CreateTopic(t, brokers, 2)
	s := openSQLite(t)

	// Records stamped an hour before the range, inside it, and an hour after it.
	from, to := t0, t0.Add(time.Hour)
	var msgs []kafka.Message
	for i, at := range []time.Time{from.Add(-time.Hour), from.Add(10 * time.Minute), to.Add(time.Hour)} {
		for j := 0; j < 50; j++ {
			id := "R-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
			msgs = append(msgs, kafka.Message{Key: []byte(id), Value: canonical(id, "closed-won", "won", t0, ""), Time: at})
		}
		if i == 1 { // an over-sized (but compressible) payload inside the range
			msgs = append(msgs, kafka.Message{Key: []byte("big"), Value: []byte(`{"pad":"` + strings.Repeat("x", crm.MaxPayloadBytes) + `"}`), Time: at})
		}
	}
	produceAt(t, brokers, topic, msgs)

	// The live consumer had already written 20 of the in-range deals.
	live := newTestPipeline(t, s, &recordingWriter{}, nil)
	var first []kafka.Message
	for j := 0; j < 20; j++ {
		id := "R-1-" + strconv.Itoa(j)
		first = append(first, msgAt(topic, 0, int64(j), canonical(id, "closed-won", "won", t0, "")))
	}
	_, err := live.Process(ctx, first)
	require.NoError(t, err)
	require.Len(t, listAll(t, s), 40)

	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.StageTopics = []StageTopic{{Topic: topic}}
	cfg.BatchSize = 7
	mp := testMapping(t)
	r, err := NewReplayer(cfg, ReplayDeps{Store: s, Mapping: func() *crm.Mapping { return mp },
		Normalizer: pii.Normalizer{DefaultRegion: "US"}, Log: zaptest.NewLogger(t)})
	require.NoError(t, err)

	var mu sync.Mutex
	var lastRead, lastTotal int64
	backwards := false
	progress := func(read, total int64) {
		mu.Lock()
		defer mu.Unlock()
		backwards = backwards || read < lastRead
		lastRead, lastTotal = read, total
	}
	opts := ReplayOptions{Topic: topic, From: from, To: to, Destinations: []string{"google-main"}, DryRun: true, Progress: progress}
	sum, err := r.Replay(ctx, opts)
	require.NoError(t, err)
	require.False(t, backwards, "progress never goes backwards")
	opts.Progress = nil
	require.Equal(t, 2, sum.Partitions)
	require.Equal(t, int64(51), sum.Read, "only the offsets of the range are read")
	require.Equal(t, lastTotal, lastRead)
	require.Equal(t, 50, sum.Stats.Planned)
	require.Equal(t, 30, sum.Stats.Created, "would create")
	require.Equal(t, 20, sum.Stats.Existing, "already uploaded by the live consumer")
	require.Equal(t, 1, sum.Stats.DeadLettered)
	require.Len(t, listAll(t, s), 40, "a dry run writes nothing")

	opts.DryRun = false
	sum, err = r.Replay(ctx, opts)
	require.NoError(t, err)
	require.Equal(t, 30, sum.Stats.Created)
	rows := listAll(t, s)
	require.Len(t, rows, 70)
	for _, c := range rows {
		inLive := strings.HasPrefix(c.ObjectID, "R-1-") && mustAtoi(t, strings.TrimPrefix(c.ObjectID, "R-1-")) < 20
		require.True(t, strings.HasPrefix(c.ObjectID, "R-1-"), "only the range was replayed: %s", c.ObjectID)
		require.Equal(t, !inLive, c.Replay, c.ObjectID)
		if c.Replay {
			require.Equal(t, "google-main", c.Destination)
		}
	}

	sum, err = r.Replay(ctx, opts)
	require.NoError(t, err)
	require.Zero(t, sum.Stats.Created, "replaying again creates nothing")
	require.Equal(t, 50, sum.Stats.Existing)

	_, err = r.Replay(ctx, ReplayOptions{Topic: "nope", From: from, To: to})
	require.ErrorContains(t, err, "neither a configured stage topic")
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
