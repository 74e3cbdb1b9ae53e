package devbroker

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// The worker uses kafka-go consumer groups; the demo only works if kfake speaks enough of
// the protocol for them: produce, join, fetch, commit, and resume from the commit.
func TestKafkaGoConsumerGroupAgainstDevBroker(t *testing.T) {
	t.Parallel()
	b, err := Start(0, 2, "t")
	require.NoError(t, err)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "t", Balancer: &kafka.Hash{}, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, 20)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte{byte(i)}, Value: []byte{byte(i)}}
	}
	require.NoError(t, w.WriteMessages(ctx, msgs...))

	seen := map[byte]int{}
	read := func(n int) int {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Addrs(), GroupID: "g", Topic: "t", MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
		defer r.Close()
		got := 0
		for got < n {
			m, err := r.FetchMessage(ctx)
			require.NoError(t, err)
			require.NoError(t, r.CommitMessages(ctx, m))
			seen[m.Value[0]]++
			got++
		}
		return got
	}
	require.Equal(t, 10, read(10))
	require.Equal(t, 10, read(10))
	require.Len(t, seen, 20, "a second reader in the group resumes after the committed offsets")
}
