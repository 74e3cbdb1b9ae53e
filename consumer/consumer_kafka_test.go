package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
)

// crashingStore writes batches through, but after its allowance of good writes the next
// write reaches the database and then "crashes" (a permanent error), as a process killed
// between the store commit and the Kafka commit would: the batch must be redelivered and
// be harmless the second time.
type crashingStore struct {
	*store.Store
	allowance atomic.Int32
}

func (c *crashingStore) WriteBatch(ctx context.Context, b store.Batch) (store.BatchResult, error) {
	res, err := c.Store.WriteBatch(ctx, b)
	if err == nil && c.allowance.Add(-1) < 0 {
		return store.BatchResult{}, &store.InvalidError{Field: "test", Reason: "crash after the durable write"}
	}
	return res, err
}

// proofData is what the end-to-end test produces and what it must find afterwards.
type proofData struct {
	stage, hubspot, identities []kafka.Message
	wantRows                   map[string]store.State // key → final state
	wantDead                   int                    // distinct dead letters
	lateIdentity               map[int]bool           // odd deals released by a late capture
}

// makeProofData builds 10,000 stage-change messages: 4,000 won deals (even ones carry a
// gclid), 1,000 duplicates of them, 4,800 stage changes no rule matches, 100 garbage
// messages and 100 HubSpot batches of 3 good events and 1 bad one; plus 500 late identity
// captures (a gclid for odd deals) and 10 invalid ones.
func makeProofData(t *testing.T) proofData {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	d := proofData{wantRows: map[string]store.State{}, lateIdentity: map[int]bool{}}
	const deals = 4000
	for i := 0; i < deals; i++ {
		id := "D-" + strconv.Itoa(i)
		extra := ""
		if i%2 == 0 {
			extra = fmt.Sprintf(`,"click_ids":{"gclid":"G-%d"}`, i)
		}
		d.stage = append(d.stage, kafka.Message{Key: []byte(id), Value: canonical(id, "closed-won", "won", t0, extra)})
	}
	for i := 0; i < 1000; i++ {
		d.stage = append(d.stage, d.stage[rng.IntN(deals)])
	}
	for i := 0; i < 4800; i++ {
		id := "N-" + strconv.Itoa(i)
		d.stage = append(d.stage, kafka.Message{Key: []byte(id), Value: canonical(id, "negotiation", "", t0, "")})
	}
	for i := 0; i < 100; i++ {
		d.stage = append(d.stage, kafka.Message{Key: []byte("junk"), Value: []byte(fmt.Sprintf(`{"garbage": %d`, i))})
	}
	rng.Shuffle(len(d.stage), func(i, j int) { d.stage[i], d.stage[j] = d.stage[j], d.stage[i] })
	for b := 0; b < 100; b++ {
		ms := t0.UnixMilli()
		v := fmt.Sprintf(`[
 {"eventId":1,"subscriptionType":"deal.propertyChange","objectId":%d,"occurredAt":%d,"propertyName":"dealstage","propertyValue":"closedwon"},
 {"eventId":2,"subscriptionType":"deal.propertyChange","objectId":%d,"occurredAt":%d,"propertyName":"dealstage","propertyValue":"closedwon"},
 {"eventId":3,"subscriptionType":"deal.propertyChange","objectId":%d,"propertyName":"dealstage","propertyValue":"closedwon"},
 {"eventId":4,"subscriptionType":"deal.propertyChange","objectId":%d,"occurredAt":%d,"propertyName":"dealstage","propertyValue":"closedwon"}]`,
			b*10+1, ms, b*10+2, ms, b*10+3, b*10+4, ms)
		d.hubspot = append(d.hubspot, kafka.Message{Key: []byte(strconv.Itoa(b)), Value: []byte(v)})
		for _, o := range []int{1, 2, 4} {
			d.wantRows[crm.ConversionKey("hubspot", "deal", strconv.Itoa(b*10+o), "hs-won", "google-main")] = store.StateAwaitingIdentity
		}
	}
	for i := 1; i < 1000; i += 2 {
		d.lateIdentity[i] = true
		d.identities = append(d.identities, kafka.Message{Key: []byte(strconv.Itoa(i)),
			Value: identityCapture("c-D-"+strconv.Itoa(i), t0.Add(-time.Hour), fmt.Sprintf(`"gclid":"late-%d"`, i))})
	}
	for i := 0; i < 10; i++ {
		d.identities = append(d.identities, kafka.Message{Key: []byte("bad"), Value: []byte(`{"subject":{"type":"planet"}}`)})
	}
	for i := 0; i < deals; i++ {
		id := "D-" + strconv.Itoa(i)
		g, m := store.StateAwaitingIdentity, store.StateAwaitingIdentity
		if i%2 == 0 || d.lateIdentity[i] {
			g = store.StateReady
		}
		d.wantRows[crm.ConversionKey("relay", "deal", id, "won", "google-main")] = g
		d.wantRows[crm.ConversionKey("relay", "deal", id, "won", "meta-main")] = m
	}
	d.wantDead = 100 + 100 + 10
	require.Len(t, d.stage, 9900)
	require.Len(t, d.hubspot, 100)
	return d
}

func produce(t testing.TB, brokers []string, topic string, msgs []kafka.Message, headers ...kafka.Header) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 500, BatchTimeout: 5 * time.Millisecond, Compression: kafka.Lz4, Transport: tr}
	defer w.Close()
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		out[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A topic just created may not be in every broker's metadata yet; kafka-go then fails
	// the whole write before sending anything, so retrying cannot duplicate.
	var err error
	for range 50 {
		if err = w.WriteMessages(ctx, out...); !errors.Is(err, kafka.UnknownTopicOrPartition) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err)
}

// committedAtEnd reports whether group's committed offset equals the high watermark on
// every partition of topic.
func committedAtEnd(ctx context.Context, t testing.TB, brokers []string, group, topic string) bool {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	require.NoError(t, err)
	var parts []int
	var reqs []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		parts = append(parts, p.ID)
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	ends, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	require.NoError(t, err)
	committed, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	require.NoError(t, err)
	byPart := map[int]int64{}
	for _, p := range committed.Topics[topic] {
		byPart[p.Partition] = p.CommittedOffset
	}
	for _, p := range ends.Topics[topic] {
		if p.LastOffset > 0 && byPart[p.Partition] != p.LastOffset { // an empty partition has nothing to commit
			return false
		}
	}
	return true
}

func readAll(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, 0)
	require.NoError(t, err)
	end, err := conn.ReadLastOffset()
	require.NoError(t, err)
	_ = conn.Close()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for int64(len(out)) < end {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func TestConsumerEndToEndOnKafka(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	data := makeProofData(t)
	for _, dialect := range []string{store.DriverSQLite, store.DriverPostgres} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			var s *store.Store
			if dialect == store.DriverPostgres {
				s = openPostgres(t)
			} else {
				s = openSQLite(t)
			}
			runProof(t, brokers, s, data)
		})
	}
}

func runProof(t *testing.T, brokers []string, s *store.Store, data proofData) {
	stageTopic := testenv.CreateTopic(t, brokers, 3)
	hsTopic := testenv.CreateTopic(t, brokers, 1)
	idTopic := testenv.CreateTopic(t, brokers, 2)
	dlqTopic := testenv.CreateTopic(t, brokers, 1)

	produce(t, brokers, stageTopic, data.stage)
	// The HubSpot topic is configured canonical: the header names the format.
	produce(t, brokers, hsTopic, data.hubspot, kafka.Header{Key: HeaderFormat, Value: []byte(crm.FormatHubSpot)})

	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.GroupID = "g-" + stageTopic
	cfg.StageTopics = []StageTopic{{Topic: stageTopic}, {Topic: hsTopic}}
	cfg.IdentityTopic = idTopic
	cfg.DeadLetterTopic = dlqTopic
	cfg.BatchSize = 250
	cfg.BatchWait = 50 * time.Millisecond
	mp := testMapping(t)
	metrics := NewMetrics(prometheus.NewRegistry())
	start := func(st Store) (*Consumer, context.CancelFunc, chan error) {
		c, err := New(cfg, Deps{Store: st, Mapping: func() *crm.Mapping { return mp }, Normalizer: pii.Normalizer{DefaultRegion: "US"},
			Metrics: metrics, Log: zaptest.NewLogger(t).Named(t.Name())})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		return c, cancel, done
	}
	count := func() int {
		all, err := s.ListConversions(context.Background(), store.ListFilter{})
		require.NoError(t, err)
		return len(all)
	}

	// 1. Crash after the third durable write: Run stops with an error, that batch's
	// offsets uncommitted.
	cs := &crashingStore{Store: s}
	cs.allowance.Store(3)
	c, cancel, done := start(cs)
	select {
	case err := <-done:
		var inv *store.InvalidError
		require.True(t, errors.As(err, &inv), "Run stops on the crash: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("the crash never came")
	}
	cancel()
	require.NoError(t, c.Close())
	afterCrash := count()
	require.Greater(t, afterCrash, 0)

	// 2. Restart, then cancel midway.
	c, cancel, done = start(s)
	require.Eventually(t, func() bool { return count() > afterCrash+500 }, 60*time.Second, 20*time.Millisecond)
	require.Eventually(t, c.Ready, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, c.Close())
	t.Logf("rows after crash %d, after cancel %d of %d", afterCrash, count(), len(data.wantRows))

	// 3. Late identities arrive; restart and run to the end.
	produce(t, brokers, idTopic, data.identities)
	c, cancel, done = start(s)
	ctx := context.Background()
	require.Eventually(t, func() bool {
		return committedAtEnd(ctx, t, brokers, cfg.GroupID, stageTopic) &&
			committedAtEnd(ctx, t, brokers, cfg.GroupID, hsTopic) &&
			committedAtEnd(ctx, t, brokers, cfg.GroupID+"-identities", idTopic)
	}, 120*time.Second, 100*time.Millisecond, "committed offsets reach the end of every topic")
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, c.Close())

	// Exactly the expected rows, in the expected states.
	all, err := s.ListConversions(ctx, store.ListFilter{})
	require.NoError(t, err)
	got := make(map[string]store.State, len(all))
	for _, r := range all {
		_, dup := got[r.Key]
		require.False(t, dup)
		got[r.Key] = r.State
		require.Equal(t, mp.Version(), r.MappingVersion)
	}
	require.Equal(t, len(data.wantRows), len(got))
	wrong := 0
	for k, want := range data.wantRows {
		if got[k] != want {
			wrong++
		}
	}
	require.Zero(t, wrong, "rows whose state differs from the expected one")

	// Every garbage message and bad event is on the dead-letter topic with a reason (a
	// batch redelivered after the crash may have dead-lettered twice: at-least-once).
	type src struct{ topic, partition, offset, index string }
	seen := map[src]bool{}
	codes := map[string]int{}
	for _, m := range readAll(t, brokers, dlqTopic) {
		h := headerMap(m.Headers)
		require.NotEmpty(t, h[HeaderErrorReason])
		k := src{h[HeaderSourceTopic], h[HeaderSourcePartition], h[HeaderSourceOffset], h[HeaderErrorIndex]}
		if !seen[k] {
			seen[k] = true
			codes[h[HeaderErrorCode]]++
		}
	}
	require.Equal(t, data.wantDead, len(seen))
	require.Equal(t, map[string]int{ReasonUndecodable: 100, ReasonBadEvent: 100, ReasonInvalidIdentity: 10}, codes)
	stageDead := 0
	for k := range seen {
		if k.topic == stageTopic || k.topic == hsTopic {
			stageDead++
		}
	}
	require.Equal(t, 200, stageDead)

	// The crash came after the durable write, so its batch was redelivered: the report's
	// stage counts are still exactly the messages produced. 9,800 canonical stage changes
	// (4,000 won deals and 1,000 repeats of them, 4,800 no rule matches) and 3 good events
	// in each of the 100 HubSpot batches.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	counts, err := s.StageCounts(ctx, today.Add(-48*time.Hour), today.Add(48*time.Hour))
	require.NoError(t, err)
	byRule := map[string]int{}
	for _, c := range counts {
		byRule[c.Source+"/"+c.Rule] += c.Count
	}
	require.Equal(t, map[string]int{"relay/won": 5000, "relay/": 4800, "hubspot/hs-won": 300}, byRule)
}
