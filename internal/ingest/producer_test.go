package ingest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/testenv"
)

func testProducer(t *testing.T, brokers []string) *producer {
	t.Helper()
	tr := &kafka.Transport{ClientID: "ingest-producer-test"}
	p := newProducer(&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}, 200, 1<<20, 3, 10*time.Second)
	t.Cleanup(func() {
		require.NoError(t, p.Close())
		tr.CloseIdleConnections()
	})
	return p
}

// TestProducerKeepsEachKeysOrder: many concurrent callers publish, one after another,
// numbered messages of their own keys (some calls carrying several keys at once); every
// call that returned nil is on the topic, each key on one partition, in the order
// published; and every message went in a produce request (more than one if retried).
func TestProducerKeepsEachKeysOrder(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.CreateTopic(t, brokers, 3)
	p := testProducer(t, brokers)
	var requests, messages int
	var mu sync.Mutex
	p.observe = func(n int) { mu.Lock(); requests++; messages += n; mu.Unlock() }

	const callers, calls = 16, 40
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				msgs := []kafka.Message{{Topic: topic, Key: []byte(fmt.Sprintf("k%d", c)), Value: []byte(strconv.Itoa(i))}}
				if i%5 == 0 { // a call with a second key: the caller's other one
					msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(fmt.Sprintf("k%d-b", c)), Value: []byte(strconv.Itoa(i))})
				}
				if err := p.Publish(ctx, msgs); err != nil {
					errs <- fmt.Errorf("caller %d call %d: %w", c, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	want := callers * (calls + calls/5)
	got := readAll(t, brokers, topic, want)
	require.Equal(t, int64(want), endOffsets(t, brokers, topic))
	last := map[string]int{}
	partition := map[string]int{}
	for _, m := range got {
		k := string(m.Key)
		v, err := strconv.Atoi(string(m.Value))
		require.NoError(t, err)
		if prev, ok := last[k]; ok {
			require.Greater(t, v, prev, "key %s out of order", k)
			require.Equal(t, partition[k], m.Partition, "key %s on two partitions", k)
		}
		last[k], partition[k] = v, m.Partition
	}
	require.Len(t, last, 2*callers)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, messages, want, "messages sent in produce requests, retries counted")
	t.Logf("%d messages in %d produce requests", messages, requests)
}

// TestProducerRefusesAfterClose: Close flushes and stops; a later Publish is refused
// at once, not left waiting.
func TestProducerRefusesAfterClose(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.CreateTopic(t, brokers, 1)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	p := newProducer(&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}, 200, 1<<20, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, p.Publish(ctx, []kafka.Message{{Topic: topic, Key: []byte("k"), Value: []byte("v")}}))
	require.NoError(t, p.Close())
	require.ErrorIs(t, p.Publish(ctx, []kafka.Message{{Topic: topic, Key: []byte("k"), Value: []byte("w")}}), errProducerClosed)
	require.NoError(t, p.Close(), "Close twice")
	require.Equal(t, int64(1), endOffsets(t, brokers, topic))
}

// TestProducerUnknownTopicFails: a topic the cluster does not have is an error, not a
// wait.
func TestProducerUnknownTopicFails(t *testing.T) {
	t.Parallel()
	p := testProducer(t, testenv.KafkaBrokers(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.Publish(ctx, []kafka.Message{{Topic: "no-such-topic-" + strconv.FormatInt(time.Now().UnixNano(), 36), Key: []byte("k"), Value: []byte("v")}})
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "the error came from the cluster, not from the deadline")
}
