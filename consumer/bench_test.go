package consumer

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/bench"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
)

// BenchmarkConsumerPostgres measures stage changes consumed → joined → in the outbox →
// committed, on the real broker and Postgres: b.N messages per run, every one a won deal
// (two conversions each, Google and Meta). Reports stage_changes/s.
//
//   - mixed: half carry a gclid (stored as a capture of the deal, ready at once), half
//     carry nothing and no identity is stored (awaiting, re-checked after the write).
//
//   - stored: every deal's contact has a stored identity (gclid, hashed email), as in
//     `make bench`: all ready, no capture written.
//
//     scripts/with-services.sh go test ./consumer -run '^$' -bench ConsumerPostgres -benchtime 100000x
func BenchmarkConsumerPostgres(b *testing.B) {
	b.Run("mixed", func(b *testing.B) { benchConsumer(b, false) })
	b.Run("stored", func(b *testing.B) { benchConsumer(b, true) })
}

func benchConsumer(b *testing.B, stored bool) {
	brokers := testenv.KafkaBrokers(b)
	s := openPostgres(b)
	topic := testenv.CreateTopic(b, brokers, 3)
	dlq := testenv.CreateTopic(b, brokers, 1)
	msgs := make([]kafka.Message, b.N)
	var caps []store.IdentityCapture
	for i := range msgs {
		id := "B-" + strconv.Itoa(i)
		extra := ""
		switch {
		case stored:
			caps = append(caps, store.IdentityCapture{SubjectKey: crm.SubjectKey("relay", "contact", "c-"+id),
				CapturedAt: t0.Add(-time.Hour), Clicks: []store.Click{{Type: "gclid", ID: "G-" + id, At: t0.Add(-time.Hour)}},
				Identifiers: pii.Set{"email": fmt.Sprintf("%064x", i)}})
		case i%2 == 0:
			extra = fmt.Sprintf(`,"click_ids":{"gclid":"G-%d"}`, i)
		}
		msgs[i] = kafka.Message{Key: []byte(id), Value: canonical(id, "closed-won", "won", t0, extra)}
	}
	for len(caps) > 0 {
		n := min(len(caps), 5000)
		_, err := s.UpsertIdentities(context.Background(), caps[:n])
		require.NoError(b, err)
		caps = caps[n:]
	}
	produce(b, brokers, topic, msgs)

	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.GroupID = "bench-" + topic
	cfg.StageTopics = []StageTopic{{Topic: topic}}
	cfg.IdentityTopic = ""
	cfg.DeadLetterTopic = dlq
	runConsumerBench(b, s, cfg, cfg.GroupID, topic, "stage_change")
	if stored {
		ready, err := s.ListConversions(context.Background(), store.ListFilter{State: store.StateReady, Limit: 2*b.N + 1})
		require.NoError(b, err)
		require.Len(b, ready, 2*b.N, "every conversion joined to its stored identity")
	}
}

// BenchmarkIdentityConsumerPostgres measures identity captures consumed → decoded and
// hashed → merged into Postgres → committed, on the real broker: b.N captures of new
// contacts (gclid, ttclid, email, phone, consent), as `make bench` produces them. Reports
// captures/s and the process's CPU per capture.
//
//	scripts/with-services.sh go test ./consumer -run '^$' -bench IdentityConsumerPostgres -benchtime 100000x
func BenchmarkIdentityConsumerPostgres(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	s := openPostgres(b)
	topic := testenv.CreateTopic(b, brokers, 4)
	stages := testenv.CreateTopic(b, brokers, 1)
	dlq := testenv.CreateTopic(b, brokers, 1)
	ds := bench.Dataset{Source: "bench", Prefix: topic, Now: t0}
	msgs := make([]kafka.Message, b.N)
	for i := range msgs {
		msgs[i] = ds.Identity(i)
	}
	produce(b, brokers, topic, msgs)

	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.GroupID = "bench-" + topic
	cfg.IdentityGroupID = cfg.GroupID + "-identities"
	cfg.StageTopics = []StageTopic{{Topic: stages}}
	cfg.IdentityTopic = topic
	cfg.DeadLetterTopic = dlq
	runConsumerBench(b, s, cfg, cfg.IdentityGroupID, topic, "capture")
	got, err := s.LookupIdentities(context.Background(), []string{"bench:contact:" + ds.ContactID(b.N-1)})
	require.NoError(b, err)
	require.Len(b, got, 1, "the last capture is stored")
}

// runConsumerBench runs a consumer on cfg (batch size from CLOSEDLOOP_BENCH_BATCH when
// set) until group has committed the end of topic, timing that, and reports b.N/s and the
// process's CPU per message, as unit/s and cpu_µs/unit.
func runConsumerBench(b *testing.B, s *store.Store, cfg Config, group, topic, unit string) {
	if v, err := strconv.Atoi(os.Getenv("CLOSEDLOOP_BENCH_BATCH")); err == nil {
		cfg.BatchSize = v
	}
	mp := testMapping(b)
	c, err := New(cfg, Deps{Store: s, Mapping: func() *crm.Mapping { return mp }, Normalizer: pii.Normalizer{DefaultRegion: "US"},
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: benchLogger(b)})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for !committedAtEnd(context.Background(), b, cfg.Brokers, group, topic) {
		require.True(b, time.Now().Before(deadline), "the consumer did not reach the end in time")
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	cancel()
	require.NoError(b, <-done)
	require.NoError(b, c.Close())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), unit+"s/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_µs/"+unit)
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

// processCPU is the user+system CPU time this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
