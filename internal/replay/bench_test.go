package replay_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/replay"
)

var (
	benchMessages    = flag.Int("replay.messages", 20000, "stage changes BenchmarkReplayExisting produces and replays")
	benchConcurrency = flag.Int("replay.concurrency", 0, "partitions BenchmarkReplayExisting reads at once (0: the default)")
)

// produceWon writes n canonical stage changes, every one a won deal with a gclid and an
// fbc (so both destinations plan a ready conversion), timestamps spread over the hour
// before now.
func produceWon(tb testing.TB, brokers []string, topic string, n int) (from, to time.Time) {
	tb.Helper()
	to = time.Now().UTC().Truncate(time.Second)
	from = to.Add(-time.Hour)
	step := time.Hour / time.Duration(n)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond, Transport: tr}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const chunk = 10000
	msgs := make([]kafka.Message, 0, chunk)
	for i := 0; i < n; i++ {
		at := from.Add(time.Duration(i) * step)
		id := fmt.Sprintf("B-%d", i)
		v := fmt.Sprintf(`{"source":"hubspot","object_type":"deal","object_id":%q,"stage":"closedwon","status":"won",`+
			`"occurred_at":%q,"amount":"%d.00","currency":"USD","contact_ids":["C-%d"],`+
			`"click_ids":{"gclid":"G-%d","fbc":"fb.1.%d.F%d"}}`, id, at.Format(time.RFC3339Nano), 100+i%900, i, i, at.UnixMilli(), i)
		msgs = append(msgs, kafka.Message{Key: []byte(id), Value: []byte(v), Time: at})
		if len(msgs) == chunk || i == n-1 {
			require.NoError(tb, w.WriteMessages(ctx, msgs...))
			msgs = msgs[:0]
		}
	}
	return from, to.Add(time.Second)
}

// BenchmarkReplayExisting replays -replay.messages stage changes whose conversions all
// exist already (real Kafka and PostgreSQL): the replay must create nothing. It reports
// messages per second and the heap in use after a replay; `make bench` runs the
// 1,000,000-message version of the same replay.Kafka call.
func BenchmarkReplayExisting(b *testing.B) {
	e := newKafkaEnv(b, 3)
	e.cfg.Kafka.BatchSize = 1000 // the default, as in production (the tests' config uses small batches)
	n := *benchMessages
	from, to := produceWon(b, e.brokers, e.topic, n)
	r := newReplayerWith(b, e.cfg, e.st, time.Now(), *benchConcurrency)
	ctx := context.Background()
	opts := replay.KafkaOptions{From: from, To: to}
	first, err := r.Kafka(ctx, opts)
	require.NoError(b, err)
	require.Equal(b, 2*n, first.Conversions.New, "the first replay creates every conversion")
	before := tableCounts(b, e.db)

	b.ResetTimer()
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		sum, err := r.Kafka(ctx, opts)
		elapsed += time.Since(start)
		require.NoError(b, err)
		require.EqualValues(b, n, sum.Read)
		require.Zero(b, sum.Conversions.New)
		require.Equal(b, 2*n, sum.Conversions.Existing)
	}
	b.StopTimer()
	require.Equal(b, before, tableCounts(b, e.db), "replays of existing conversions write nothing")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}
