package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

func newTestIdentityPipeline(t testing.TB, st IdentityStore, dlq messageWriter, m *Metrics) *IdentityPipeline {
	t.Helper()
	p, err := NewIdentityPipeline(IdentityPipelineConfig{
		Normalizer: pii.Normalizer{DefaultRegion: "US"}, Store: st, DeadLetters: dlq, DeadLetterTopic: "dlq",
		Metrics: m, Log: zaptest.NewLogger(t),
	})
	require.NoError(t, err)
	p.retry = fastRetry
	return p
}

func TestLateIdentityReleasesWaitingConversions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{}
	metrics := NewMetrics(prometheus.NewRegistry())
	stages := newTestPipeline(t, s, dlq, metrics)
	ids := newTestIdentityPipeline(t, s, dlq, metrics)

	_, err := stages.Process(ctx, []kafka.Message{msgAt("crm", 0, 1, canonical("D-5", "closed-won", "", t0, ""))})
	require.NoError(t, err)
	gKey := crm.ConversionKey("relay", "deal", "D-5", "won", "google-main")
	mKey := crm.ConversionKey("relay", "deal", "D-5", "won", "meta-main")
	rows := listAll(t, s)
	require.Equal(t, store.StateAwaitingIdentity, rows[gKey].State)
	require.Equal(t, store.StateAwaitingIdentity, rows[mKey].State)

	// A gclid clicked before the conversion releases the Google row only; an fbclid
	// clicked after it cannot have led to it; a capture that is invalid goes to the DLQ.
	st, err := ids.Process(ctx, []kafka.Message{
		msgAt("ids", 0, 1, identityCapture("c-D-5", t0.Add(-24*time.Hour), `"gclid":"G-late"`)),
		msgAt("ids", 0, 2, identityCapture("c-D-5", t0.Add(time.Hour), `"fbclid":"F-after"`)),
		msgAt("ids", 0, 3, []byte(`{"subject":{"type":"contact","source":"relay","id":"x"},"captured_at":"2026-01-01T00:00:00Z","email":"not-an-email jane@example"}`)),
	})
	require.NoError(t, err)
	require.Equal(t, IdentityStats{Messages: 3, Captures: 2, DeadLettered: 1, Released: 1}, st)
	rows = listAll(t, s)
	require.Equal(t, store.StateReady, rows[gKey].State)
	require.Equal(t, "", rows[gKey].Reason)
	click, ok := findClick(rows[gKey].Identity, "gclid")
	require.True(t, ok)
	require.Equal(t, "G-late", click.ID)
	require.Equal(t, store.StateAwaitingIdentity, rows[mKey].State)

	dead := dlq.written()
	require.Len(t, dead, 1)
	h := headerMap(dead[0].Headers)
	require.Equal(t, ReasonInvalidIdentity, h[HeaderErrorCode])
	require.NotContains(t, h[HeaderErrorReason], "jane")
	require.NotEmpty(t, h[HeaderErrorField])

	// A hashed email releases the Meta row.
	st, err = ids.Process(ctx, []kafka.Message{
		msgAt("ids", 0, 4, []byte(`{"subject":{"type":"contact","source":"relay","id":"c-D-5"},"captured_at":"2026-03-03T00:00:00Z","email":"Jane@Example.com"}`)),
	})
	require.NoError(t, err)
	require.Equal(t, 1, st.Released)
	require.Equal(t, store.StateReady, listAll(t, s)[mKey].State)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.released.WithLabelValues("meta-main")))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.released.WithLabelValues("google-main")))
}

func findClick(id store.Identity, typ string) (store.Click, bool) {
	for _, c := range id.Clicks {
		if c.Type == typ {
			return c, true
		}
	}
	return store.Click{}, false
}

// racingStore stores an identity capture right after the stage pipeline's identity lookup,
// as the identity consumer running concurrently would: its re-join ran before the stage
// batch's rows existed, so only the stage pipeline's recheck can release them.
type racingStore struct {
	*store.Store
	once    sync.Once
	capture store.IdentityCapture
}

func (r *racingStore) LookupIdentities(ctx context.Context, keys []string) (map[string]store.Identity, error) {
	got, err := r.Store.LookupIdentities(ctx, keys)
	r.once.Do(func() {
		if _, uerr := r.Store.UpsertIdentities(ctx, []store.IdentityCapture{r.capture}); uerr != nil {
			err = uerr
		}
	})
	return got, err
}

func TestStageBatchRechecksIdentitiesThatArrivedDuringTheJoin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	capture, err := identity.Decode(identityCapture("c-D-6", t0.Add(-time.Hour), `"gclid":"G-race"`), pii.Normalizer{})
	require.NoError(t, err)
	s := &racingStore{Store: openSQLite(t), capture: capture}
	p := newTestPipeline(t, s, &recordingWriter{}, nil)
	st, err := p.Process(ctx, []kafka.Message{msgAt("crm", 0, 1, canonical("D-6", "closed-won", "", t0, ""))})
	require.NoError(t, err)
	require.Equal(t, 2, st.Awaiting, "the join saw no identity")
	require.Equal(t, 1, st.Released, "the recheck after the write found it")
	require.Equal(t, store.StateReady, listAll(t, s.Store)[crm.ConversionKey("relay", "deal", "D-6", "won", "google-main")].State)
}

func TestSweepMarksOldAwaitingRowsUnmatched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	p := newTestPipeline(t, s, &recordingWriter{}, nil)
	_, err := p.Process(ctx, []kafka.Message{
		msgAt("crm", 0, 1, canonical("D-7", "closed-won", "", t0, `,"click_ids":{"gclid":"G-7"}`)),
	})
	require.NoError(t, err)
	metrics := NewMetrics(prometheus.NewRegistry())
	now := time.Now()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"}
	c, err := New(cfg, Deps{Store: s, Mapping: func() *crm.Mapping { return testMapping(t) }, Metrics: metrics,
		DeadLetters: &recordingWriter{}, Log: zaptest.NewLogger(t), Now: func() time.Time { return now }})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })

	n, err := c.SweepOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "rows younger than awaiting_timeout keep waiting")

	now = now.Add(cfg.AwaitingTimeout + time.Minute)
	n, err = c.SweepOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the meta row was awaiting")
	meta := listAll(t, s)[crm.ConversionKey("relay", "deal", "D-7", "won", "meta-main")]
	require.Equal(t, store.StateUnmatched, meta.State)
	require.Equal(t, ReasonNoIdentifier, meta.Reason)
	require.Equal(t, store.StateReady, listAll(t, s)[crm.ConversionKey("relay", "deal", "D-7", "won", "google-main")].State)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.expired))
}

// A batch large enough to be decoded on several goroutines keeps message order: captures
// of one subject with the same time merge last-wins, and dead letters keep their offsets'
// order.
func TestIdentityBatchDecodedInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{}
	ids := newTestIdentityPipeline(t, s, dlq, nil)
	const n = 20 * decodeParallelMin
	msgs := make([]kafka.Message, n)
	var wantDead []int64
	for i := range msgs {
		v := []byte(fmt.Sprintf(`{"subject":{"type":"contact","source":"relay","id":"c-order"},"captured_at":"2026-01-01T00:00:00Z","ip":"10.0.%d.%d"}`, i/256, i%256))
		if i%7 == 3 {
			v = []byte(`{"subject":{"type":"contact","source":"relay","id":"c-order"},"captured_at":"yesterday"}`)
			wantDead = append(wantDead, int64(i))
		}
		msgs[i] = msgAt("ids", 0, int64(i), v)
	}
	st, err := ids.Process(ctx, msgs)
	require.NoError(t, err)
	require.Equal(t, IdentityStats{Messages: n, Captures: n - len(wantDead), DeadLettered: len(wantDead)}, st)
	got, err := s.LookupIdentities(ctx, []string{crm.SubjectKey("relay", "contact", "c-order")})
	require.NoError(t, err)
	last := n - 1
	require.NotEqual(t, 3, last%7)
	require.Equal(t, fmt.Sprintf("10.0.%d.%d", last/256, last%256), got[crm.SubjectKey("relay", "contact", "c-order")].IP, "the last capture wins")
	var gotDead []int64
	for _, m := range dlq.written() {
		off, err := strconv.ParseInt(headerMap(m.Headers)[HeaderSourceOffset], 10, 64)
		require.NoError(t, err)
		gotDead = append(gotDead, off)
	}
	require.Equal(t, wantDead, gotDead)
}

func TestShardBySubject(t *testing.T) {
	t.Parallel()
	var caps []store.IdentityCapture
	for i := range 1000 {
		caps = append(caps, store.IdentityCapture{SubjectKey: fmt.Sprint("s-", i%37), LeadID: strconv.Itoa(i)})
	}
	require.Equal(t, [][]store.IdentityCapture{caps}, shardBySubject(caps, 1))
	shards := shardBySubject(caps, 3)
	require.Len(t, shards, 3)
	home := map[string]int{}
	total := 0
	for i, shard := range shards {
		last := -1
		for _, c := range shard {
			if h, ok := home[c.SubjectKey]; ok {
				require.Equal(t, h, i, "subject %s in two shards", c.SubjectKey)
			}
			home[c.SubjectKey] = i
			n, _ := strconv.Atoi(c.LeadID)
			require.Greater(t, n, last, "message order kept within a shard")
			last = n
		}
		total += len(shard)
	}
	require.Equal(t, len(caps), total)
	require.Len(t, home, 37)
}

// slowFirstUpsert delays the first UpsertIdentities call, so a later batch's write would
// overtake it were the lanes not ordered.
type slowFirstUpsert struct {
	IdentityStore
	once sync.Once
}

func (s *slowFirstUpsert) UpsertIdentities(ctx context.Context, caps []store.IdentityCapture) (store.UpsertResult, error) {
	s.once.Do(func() { time.Sleep(200 * time.Millisecond) })
	return s.IdentityStore.UpsertIdentities(ctx, caps)
}

// Batches started one after another are stored in that order per subject, even when the
// first one's write is slow: captures with equal times merge last-wins in message order.
func TestIdentityLanesKeepBatchOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	ids := newTestIdentityPipeline(t, &slowFirstUpsert{IdentityStore: s}, &recordingWriter{}, nil)
	batch := func(ip string) []kafka.Message {
		return []kafka.Message{msgAt("ids", 0, 1, []byte(`{"subject":{"type":"contact","source":"relay","id":"c-lane"},"captured_at":"2026-01-01T00:00:00Z","ip":"`+ip+`"}`))}
	}
	first := ids.start(ctx, ids.decode(batch("10.0.0.1")))
	second := ids.start(ctx, ids.decode(batch("10.0.0.2")))
	_, err := ids.finish(ctx, first)
	require.NoError(t, err)
	_, err = ids.finish(ctx, second)
	require.NoError(t, err)
	ids.wait()
	key := crm.SubjectKey("relay", "contact", "c-lane")
	got, err := s.LookupIdentities(ctx, []string{key})
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2", got[key].IP, "the later batch wins the tie")
}
