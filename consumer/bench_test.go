package consumer

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
)

// BenchmarkConsumerPostgres measures stage changes consumed → joined → in the outbox →
// committed, on the real broker and Postgres: b.N messages per run, every one a won deal
// (two conversions each), half with a gclid. Reports stage_changes/s.
func BenchmarkConsumerPostgres(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	s := openPostgres(b)
	topic := testenv.CreateTopic(b, brokers, 3)
	dlq := testenv.CreateTopic(b, brokers, 1)
	msgs := make([]kafka.Message, b.N)
	for i := range msgs {
		id := "B-" + strconv.Itoa(i)
		extra := ""
		if i%2 == 0 {
			extra = fmt.Sprintf(`,"click_ids":{"gclid":"G-%d"}`, i)
		}
		msgs[i] = kafka.Message{Key: []byte(id), Value: canonical(id, "closed-won", "won", t0, extra)}
	}
	produce(b, brokers, topic, msgs)

	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.GroupID = "bench-" + topic
	cfg.StageTopics = []StageTopic{{Topic: topic}}
	cfg.IdentityTopic = ""
	cfg.DeadLetterTopic = dlq
	mp := testMapping(b)
	c, err := New(cfg, Deps{Store: s, Mapping: func() *crm.Mapping { return mp }, Normalizer: pii.Normalizer{DefaultRegion: "US"},
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: benchLogger(b)})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for !committedAtEnd(context.Background(), b, brokers, cfg.GroupID, topic) {
		require.True(b, time.Now().Before(deadline), "the consumer did not reach the end in time")
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	require.NoError(b, <-done)
	require.NoError(b, c.Close())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "stage_changes/s")
}

func benchLogger(b *testing.B) *zap.Logger {
	if os.Getenv("CLOSEDLOOP_BENCH_LOG") == "" {
		return zap.NewNop()
	}
	cfg := zap.NewDevelopmentConfig()
	cfg.OutputPaths = []string{os.Getenv("CLOSEDLOOP_BENCH_LOG")}
	l, err := cfg.Build()
	require.NoError(b, err)
	return l.WithOptions(zap.IncreaseLevel(zap.DebugLevel))
}
