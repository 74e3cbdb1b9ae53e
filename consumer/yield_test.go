package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

func behindBy(partition int, n int64) []kafka.Message {
	return []kafka.Message{{Partition: partition, Offset: 10, HighWaterMark: 11 + n}}
}

func TestStageReaderYieldsToABacklogOfIdentities(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("a reader that has not fetched yet is waited for until it does", func(t *testing.T) {
		b := newIdentityBacklog(time.Now)
		var fetched atomic.Bool
		go func() {
			time.Sleep(100 * time.Millisecond)
			fetched.Store(true)
			b.note(behindBy(0, 0))
		}()
		require.Positive(t, b.yield(ctx, 100))
		require.True(t, fetched.Load())
	})

	t.Run("a reader that never fetches (an empty topic) is waited for stalledAfter at most", func(t *testing.T) {
		now := time.Now()
		b := newIdentityBacklog(func() time.Time { return now })
		now = now.Add(stalledAfter + time.Millisecond)
		require.Zero(t, b.yield(ctx, 100))
	})

	t.Run("no backlog: no wait", func(t *testing.T) {
		b := newIdentityBacklog(time.Now)
		b.note(append(behindBy(0, 60), behindBy(1, 40)...))
		n, _ := b.state()
		require.EqualValues(t, 100, n, "summed over partitions")
		require.Zero(t, b.yield(ctx, 100))
	})

	t.Run("waits until the identity reader caught up", func(t *testing.T) {
		b := newIdentityBacklog(time.Now)
		b.note(behindBy(0, 5000))
		var caughtUp atomic.Bool
		go func() {
			time.Sleep(100 * time.Millisecond)
			caughtUp.Store(true)
			b.note(behindBy(0, 0))
		}()
		held := b.yield(ctx, 100)
		require.True(t, caughtUp.Load(), "returned only once the backlog was gone")
		require.Positive(t, held)
	})

	t.Run("a stalled identity reader is not waited for", func(t *testing.T) {
		now := time.Now()
		b := newIdentityBacklog(func() time.Time { return now })
		b.note(behindBy(0, 5000))
		now = now.Add(stalledAfter + time.Second)
		require.Zero(t, b.yield(ctx, 100))
	})

	t.Run("a backlog that never ends holds a stage batch at most maxYield", func(t *testing.T) {
		b := newIdentityBacklog(time.Now)
		b.note(behindBy(0, 5000))
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
					b.note(behindBy(0, 5000)) // moving, never caught up
				}
			}
		}()
		held := b.yield(ctx, 100)
		require.GreaterOrEqual(t, held, maxYield)
	})

	t.Run("cancelled", func(t *testing.T) {
		b := newIdentityBacklog(time.Now)
		b.note(behindBy(0, 5000))
		c, cancel := context.WithCancel(ctx)
		cancel()
		require.Less(t, b.yield(c, 100), maxYield)
	})

	t.Run("nil backlog (no identity topic)", func(t *testing.T) {
		var b *identityBacklog
		b.note(behindBy(0, 1))
		require.Zero(t, b.yield(ctx, 0))
	})
}
