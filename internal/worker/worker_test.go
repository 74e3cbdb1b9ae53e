package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeConsumer fails its Run with err (after running for d), or runs until ctx ends when
// err is nil.
type fakeConsumer struct {
	err    error
	d      time.Duration
	closed int
	mu     *sync.Mutex
}

func (f *fakeConsumer) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(f.d):
		if f.err == nil {
			<-ctx.Done()
			return nil
		}
		return f.err
	}
}

func (f *fakeConsumer) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func TestKeepConsumingRestartsAFailedConsumer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := &fakeConsumer{err: errors.New("upsert identities: connection refused"), mu: &mu}
	second := &fakeConsumer{err: errors.New("fetch: broker gone"), mu: &mu}
	third := &fakeConsumer{mu: &mu} // healthy
	queue := []*fakeConsumer{second, third}
	var starts []time.Time
	done := make(chan error, 1)
	go func() {
		done <- keepConsuming(ctx, first, func() (consumerRun, error) {
			mu.Lock()
			defer mu.Unlock()
			starts = append(starts, time.Now())
			c := queue[0]
			queue = queue[1:]
			if len(queue) == 0 {
				cancel() // the healthy one runs until the worker stops
			}
			return c, nil
		}, 20*time.Millisecond, zaptest.NewLogger(t))
	}()
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, starts, 2, "a new consumer after each failure")
	require.GreaterOrEqual(t, starts[1].Sub(starts[0]), 40*time.Millisecond, "the wait doubles")
	require.Equal(t, 1, first.closed, "a failed consumer is closed before the next starts")
	require.Equal(t, 1, second.closed)
	require.Equal(t, 0, third.closed, "the last one is left to the caller")
}

func TestKeepConsumingReturnsWhenNoConsumerCanBeBuilt(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	err := keepConsuming(context.Background(), &fakeConsumer{err: errors.New("boom"), mu: &mu},
		func() (consumerRun, error) { return nil, errors.New("kafka.brokers: required") }, time.Millisecond, zaptest.NewLogger(t))
	require.EqualError(t, err, "consumer: kafka.brokers: required")
}
