package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/closedloop/closedloop/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The worker's consumption contract on a real broker: FetchMessage, then CommitMessages,
// and a group member that starts later resumes after the last commit.
func TestKafkaConsumerGroupCommitsAndResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.CreateTopic(t, brokers, 3)
	group := topic + "-group"
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()

	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond, Transport: transport,
	}
	defer w.Close()
	const n = 30
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}
	}
	require.NoError(t, w.WriteMessages(ctx, msgs...))

	newReader := func() *kafka.Reader {
		return kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, GroupID: group, Topic: topic, StartOffset: kafka.FirstOffset,
			MaxWait: 100 * time.Millisecond, CommitInterval: 0, // synchronous commits
		})
	}

	r := newReader()
	seen := map[string]string{}
	lastOffset := map[int]int64{}
	for range n {
		m, err := r.FetchMessage(ctx)
		require.NoError(t, err)
		require.NotContains(t, seen, string(m.Key), "message delivered twice")
		seen[string(m.Key)] = string(m.Value)
		if prev, ok := lastOffset[m.Partition]; ok {
			require.Greater(t, m.Offset, prev, "partition %d out of order", m.Partition)
		}
		lastOffset[m.Partition] = m.Offset
		require.NoError(t, r.CommitMessages(ctx, m))
	}
	require.NoError(t, r.Close())
	for i := range n {
		require.Equal(t, fmt.Sprintf("v%d", i), seen[fmt.Sprintf("k%d", i)])
	}

	// The group's committed offset on every partition is that partition's end offset.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport}
	ends, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2)},
	}})
	require.NoError(t, err)
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2}}})
	require.NoError(t, err)
	require.NoError(t, committed.Error)
	end := map[int]int64{}
	var total int64
	for _, p := range ends.Topics[topic] {
		require.NoError(t, p.Error)
		end[p.Partition] = p.LastOffset
		total += p.LastOffset
	}
	require.Equal(t, int64(n), total)
	require.Len(t, committed.Topics[topic], 3)
	for _, p := range committed.Topics[topic] {
		require.NoError(t, p.Error)
		require.Equal(t, end[p.Partition], p.CommittedOffset, "partition %d", p.Partition)
		if end[p.Partition] > 0 {
			require.Equal(t, lastOffset[p.Partition]+1, p.CommittedOffset, "partition %d", p.Partition)
		}
	}

	// A new member of the same group sees only what was produced after the commits.
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Key: []byte("after"), Value: []byte("commit")}))
	r2 := newReader()
	defer r2.Close()
	m, err := r2.FetchMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "after", string(m.Key))
	require.Equal(t, end[m.Partition], m.Offset)
}

// CreateTopic's cleanup deletes the topic.
func TestCreateTopicIsDeletedAtCleanup(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	var topic string
	t.Run("create", func(t *testing.T) {
		topic = testenv.CreateTopic(t, brokers, 2)
		conn, err := kafka.Dial("tcp", brokers[0])
		require.NoError(t, err)
		defer conn.Close()
		ps, err := conn.ReadPartitions(topic)
		require.NoError(t, err)
		require.Len(t, ps, 2)
	})
	require.True(t, strings.HasPrefix(topic, "t-testcreatetopicisdeletedatcleanup_create_"), topic)

	conn, err := kafka.Dial("tcp", brokers[0])
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool {
		_, err := conn.ReadPartitions(topic)
		return errors.Is(err, kafka.UnknownTopicOrPartition)
	}, 30*time.Second, 50*time.Millisecond, "topic %s still exists", topic)
}

// A row written through one connection is read back through another; each PostgresDSN
// call has a database of its own, dropped at cleanup.
func TestPostgresRoundTripAndIsolation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var dropped string
	t.Run("own database", func(t *testing.T) {
		dsn := testenv.PostgresDSN(t)
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer conn.Close(ctx)
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&dropped))
		require.NotEqual(t, "postgres", dropped)

		_, err = conn.Exec(ctx, "CREATE TABLE conversions (id bigint PRIMARY KEY, value numeric(12,2) NOT NULL, at timestamptz NOT NULL)")
		require.NoError(t, err)
		at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
		_, err = conn.Exec(ctx, "INSERT INTO conversions (id, value, at) VALUES ($1, $2, $3)", 42, "1234.50", at)
		require.NoError(t, err)

		other, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer other.Close(ctx)
		var value string
		var gotAt time.Time
		require.NoError(t, other.QueryRow(ctx, "SELECT value::text, at FROM conversions WHERE id = $1", 42).Scan(&value, &gotAt))
		require.Equal(t, "1234.50", value)
		require.True(t, at.Equal(gotAt), "got %v", gotAt)

		// A second database of the same test does not see the first one's tables.
		second, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
		require.NoError(t, err)
		defer second.Close(ctx)
		var exists bool
		require.NoError(t, second.QueryRow(ctx, "SELECT to_regclass('conversions') IS NOT NULL").Scan(&exists))
		require.False(t, exists)
	})

	// The subtest's cleanup ran when t.Run returned: its databases are gone.
	admin, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	var n int
	require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", dropped).Scan(&n))
	require.Zero(t, n, "database %s not dropped", dropped)
}
