package replay_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/config"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/replay"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
)

// kafkaEnv is a real topic of stage changes, a dead-letter topic and a migrated
// PostgreSQL database, with the replay config pointing at them.
type kafkaEnv struct {
	cfg     *config.Config
	st      *store.Store
	db      *sql.DB
	brokers []string
	topic   string
	dlq     string
}

func newKafkaEnv(t testing.TB, partitions int) *kafkaEnv {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	dsn := testenv.PostgresDSN(t)
	e := &kafkaEnv{brokers: brokers, topic: testenv.CreateTopic(t, brokers, partitions), dlq: testenv.CreateTopic(t, brokers, 1)}
	cfg := loadConfig(t)
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.StageTopics = []consumer.StageTopic{{Topic: e.topic, Format: crm.FormatCanonical}}
	cfg.Kafka.IdentityTopic = ""
	cfg.Kafka.DeadLetterTopic = e.dlq
	cfg.Kafka.GroupID = "replay-live-" + randomSuffix(t)
	cfg.Kafka.BatchWait = 50 * time.Millisecond
	cfg.Store = store.DefaultConfig()
	cfg.Store.Driver, cfg.Store.DSN, cfg.Store.Path = store.DriverPostgres, dsn, ""
	e.cfg = cfg
	e.st, e.db = openStore(t, cfg.Store, "pgx", dsn)
	return e
}

func randomSuffix(t testing.TB) string {
	var b [4]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

// threeDays is the produced history: perDay stage changes a day, one every 24h/perDay,
// on three consecutive UTC days ending yesterday; every third is a stage no rule
// matches, every fifth carries no identifier, the others a gclid (Google) and an email
// (every platform), even ones an fbc (Meta) too. Day 1 also holds two undecodable
// messages.
type threeDays struct {
	day     [4]time.Time // day[0..2] start each day, day[3] ends the range
	perDay  int
	matched [3]int // matched stage changes per day
	bad     int    // undecodable messages (all on day 1)
}

func (h threeDays) total() int { return 3*h.perDay + h.bad }

func produceThreeDays(t *testing.T, e *kafkaEnv, perDay int) threeDays {
	t.Helper()
	start := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	h := threeDays{perDay: perDay, bad: 2}
	for d := range h.day {
		h.day[d] = start.AddDate(0, 0, d)
	}
	step := 24 * time.Hour / time.Duration(perDay)
	var msgs []kafka.Message
	for d := 0; d < 3; d++ {
		for i := 0; i < perDay; i++ {
			at := h.day[d].Add(time.Duration(i) * step)
			id := fmt.Sprintf("D-%d-%d", d, i)
			stage, status := "closedwon", "won"
			if i%3 == 0 {
				stage, status = "negotiation", "open"
			} else {
				h.matched[d]++
			}
			clicks := ""
			switch {
			case i%5 == 0: // nothing to join on: awaiting identity everywhere
			case i%2 == 0:
				clicks = fmt.Sprintf(`,"click_ids":{"gclid":"G-%s","fbc":"fb.1.%d.F%s"},"email":"buyer-%s@example.com"`, id, at.UnixMilli(), id, id)
			default:
				clicks = fmt.Sprintf(`,"click_ids":{"gclid":"G-%s"},"email":"buyer-%s@example.com"`, id, id)
			}
			v := fmt.Sprintf(`{"source":"hubspot","object_type":"deal","object_id":%q,"stage":%q,"status":%q,`+
				`"occurred_at":%q,"amount":"%d.50","currency":"USD","contact_ids":["C-%s"]%s}`,
				id, stage, status, at.Format(time.RFC3339), 100+i, id, clicks)
			msgs = append(msgs, kafka.Message{Key: []byte(id), Value: []byte(v), Time: at})
			if d == 1 && (i == perDay/3 || i == 2*perDay/3) {
				msgs = append(msgs, kafka.Message{Key: []byte("junk-" + id), Value: []byte(`{"garbage":`), Time: at.Add(time.Second)})
			}
		}
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchTimeout: 10 * time.Millisecond, Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, w.WriteMessages(ctx, msgs...))
	require.NoError(t, w.Close())
	return h
}

// endOffsets returns each partition's end offset of topic.
func endOffsets(t *testing.T, brokers []string, topic string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	require.NoError(t, err)
	parts, err := conn.ReadPartitions(topic)
	require.NoError(t, conn.Close())
	require.NoError(t, err)
	out := map[int]int64{}
	for _, p := range parts {
		lc, err := kafka.DialLeader(ctx, "tcp", net.JoinHostPort(p.Leader.Host, strconv.Itoa(p.Leader.Port)), topic, p.ID)
		require.NoError(t, err)
		last, err := lc.ReadLastOffset()
		require.NoError(t, lc.Close())
		require.NoError(t, err)
		out[p.ID] = last
	}
	return out
}

// committed returns the group's committed offset of each partition of topic (-1: none).
func committed(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	require.NoError(t, err)
	require.NoError(t, resp.Error)
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		require.NoError(t, p.Error)
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// runLive runs the live consumer until its group has committed every message, then stops
// it.
func runLive(t *testing.T, e *kafkaEnv, partitions int) {
	t.Helper()
	mapping, err := e.cfg.CompileMappings()
	require.NoError(t, err)
	c, err := consumer.New(e.cfg.Kafka, consumer.Deps{
		Store:      e.st,
		Mapping:    func() *crm.Mapping { return mapping },
		Normalizer: pii.Normalizer{DefaultRegion: "US"},
		Log:        zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	want := endOffsets(t, e.brokers, e.topic)
	require.Eventually(t, func() bool {
		got := committed(t, e.brokers, e.cfg.Kafka.GroupID, e.topic, partitions)
		for p, off := range want {
			if got[p] != off {
				return false
			}
		}
		return true
	}, 90*time.Second, 200*time.Millisecond, "the live consumer commits every message")
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, c.Close())
}

// countByDestination counts stored conversions per destination.
func countByDestination(t *testing.T, db *sql.DB) map[string]int {
	t.Helper()
	rows, err := db.Query(`SELECT destination, count(*) FROM conversions GROUP BY destination`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var d string
		var n int
		require.NoError(t, rows.Scan(&d, &n))
		out[d] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// TestKafkaReplayProof is the proof on real Kafka and PostgreSQL: three days of
// stage changes processed live; the middle day replayed twice and then the whole range
// create nothing and leave the live group's offsets where they were; a dry run writes
// nothing; a replay limited to a newly added destination creates its history alone, and
// after an interruption a rerun completes it without a duplicate.
func TestKafkaReplayProof(t *testing.T) {
	t.Parallel()
	const partitions = 3
	e := newKafkaEnv(t, partitions)
	h := produceThreeDays(t, e, 120)
	allMatched := h.matched[0] + h.matched[1] + h.matched[2]

	runLive(t, e, partitions)
	live := tableCounts(t, e.db)
	require.Equal(t, 2*allMatched, live["conversions"], "live: one conversion per won deal and destination")
	offsets := committed(t, e.brokers, e.cfg.Kafka.GroupID, e.topic, partitions)
	dlqEnd := endOffsets(t, e.brokers, e.dlq)
	require.EqualValues(t, h.bad, dlqEnd[0], "live: the undecodable messages were dead-lettered")

	r := newReplayer(t, e.cfg, e.st, time.Now())
	ctx := context.Background()
	middle := replay.KafkaOptions{From: h.day[1], To: h.day[2]}
	for run := 1; run <= 2; run++ {
		sum, err := r.Kafka(ctx, middle)
		require.NoError(t, err, "middle day, run %d", run)
		require.EqualValues(t, h.perDay+h.bad, sum.Read, "the middle day's messages, by timestamp")
		require.Zero(t, sum.Skipped)
		require.Equal(t, h.bad, sum.Undecodable)
		require.Equal(t, h.perDay, sum.Decoded)
		require.Equal(t, h.matched[1], sum.Matched)
		require.Equal(t, replay.Counts{Planned: 2 * h.matched[1], Existing: 2 * h.matched[1]}, sum.Conversions)
		require.Len(t, sum.Partitions, partitions)
		for _, p := range sum.Partitions {
			require.True(t, p.Done(), "partition %d", p.Partition)
		}
		require.Equal(t, live, tableCounts(t, e.db), "middle day, run %d: no new row", run)
	}

	whole, err := r.Kafka(ctx, replay.KafkaOptions{From: h.day[0], To: h.day[3]})
	require.NoError(t, err)
	require.EqualValues(t, h.total(), whole.Read)
	require.Equal(t, replay.Counts{Planned: 2 * allMatched, Existing: 2 * allMatched}, whole.Conversions)
	require.Equal(t, live, tableCounts(t, e.db), "whole range: no new row")

	dry, err := r.Kafka(ctx, replay.KafkaOptions{Options: replay.Options{DryRun: true}, From: h.day[0], To: h.day[3]})
	require.NoError(t, err)
	require.Zero(t, dry.Conversions.New)
	require.Equal(t, live, tableCounts(t, e.db), "dry run: no new row")

	// A destination added to the rule gets its history, and only it.
	withTikTok := *e.cfg
	withTikTok.Mappings = append([]crm.MappingRule(nil), e.cfg.Mappings...)
	rule := withTikTok.Mappings[0]
	rule.Destinations = append(append([]crm.RuleDestination(nil), rule.Destinations...), crm.RuleDestination{Destination: "tiktok-crm", Conversion: "CompletePayment"})
	withTikTok.Mappings[0] = rule
	r2 := newReplayer(t, &withTikTok, e.st, time.Now())
	tiktokOnly := replay.Options{Destinations: []string{"tiktok-crm"}}

	dryT, err := r2.Kafka(ctx, replay.KafkaOptions{Options: replay.Options{Destinations: tiktokOnly.Destinations, DryRun: true}, From: h.day[0], To: h.day[3]})
	require.NoError(t, err)
	require.Equal(t, allMatched, dryT.Conversions.New, "dry run: one new conversion per won deal, for tiktok-crm")
	require.Len(t, dryT.ByDestination, 1)
	require.Equal(t, live, tableCounts(t, e.db), "dry run: no new row")

	// Interrupt it after the first batch...
	cctx, cancel := context.WithCancel(ctx)
	opts := replay.KafkaOptions{Options: tiktokOnly, From: h.day[0], To: h.day[3]}
	opts.Progress = func(done, _ int64) {
		if done > 0 {
			cancel()
		}
	}
	cut, err := r2.Kafka(cctx, opts)
	cancel()
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, cut.Interrupted)
	require.Less(t, cut.Read, int64(h.total()))
	notDone := 0
	for _, p := range cut.Partitions {
		require.GreaterOrEqual(t, p.Reached, p.Start)
		require.LessOrEqual(t, p.Reached, p.End)
		if !p.Done() {
			notDone++
		}
	}
	require.Positive(t, notDone, "the summary says which partitions did not finish")
	require.Equal(t, map[string]int{"google-main": allMatched, "meta-crm": allMatched, "tiktok-crm": cut.Conversions.New},
		countByDestination(t, e.db))

	// ... and run it again: it completes without a duplicate.
	rest, err := r2.Kafka(ctx, replay.KafkaOptions{Options: tiktokOnly, From: h.day[0], To: h.day[3]})
	require.NoError(t, err)
	require.Equal(t, allMatched-cut.Conversions.New, rest.Conversions.New)
	require.Equal(t, cut.Conversions.New, rest.Conversions.Existing)
	require.Equal(t, map[string]int{"google-main": allMatched, "meta-crm": allMatched, "tiktok-crm": allMatched},
		countByDestination(t, e.db))
	var replayRows, tiktokReplayRows int
	require.NoError(t, e.db.QueryRow(`SELECT count(*) FILTER (WHERE replay), count(*) FILTER (WHERE replay AND destination = 'tiktok-crm') FROM conversions`).
		Scan(&replayRows, &tiktokReplayRows))
	require.Equal(t, allMatched, replayRows, "only the replayed rows are marked replay")
	require.Equal(t, allMatched, tiktokReplayRows)

	require.Equal(t, offsets, committed(t, e.brokers, e.cfg.Kafka.GroupID, e.topic, partitions), "the live group's offsets did not move")
	require.Equal(t, dlqEnd, endOffsets(t, e.brokers, e.dlq), "a replay dead-letters nothing")
}

func TestKafkaReplayRejectsBadOptions(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t)
	st, _ := openSQLite(t)
	r := newReplayer(t, cfg, st, time.Now())
	from := time.Date(2024, 5, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		opts replay.KafkaOptions
		want string
	}{
		{"unknown topic", replay.KafkaOptions{Topics: []string{"nope"}, From: from}, `topic "nope" is not a configured stage topic`},
		{"backwards", replay.KafkaOptions{From: from, To: from.Add(-time.Hour)}, "must be before"},
		{"destination", replay.KafkaOptions{Options: replay.Options{Destinations: []string{"tiktok-crm"}}, From: from}, "no mapping rule sends conversions to it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Kafka(context.Background(), tc.opts)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
