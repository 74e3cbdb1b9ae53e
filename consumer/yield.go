package consumer

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Identities first. When both topics hold a backlog (a worker back after downtime), a
// stage change read before the captures of its contacts is written awaiting identity,
// then rewritten by the re-join once they arrive: the row, its subject index entries and
// the lookups cost twice, and the two pipelines split the cores while doing it. The stage
// reader therefore holds back while the identity reader is far behind and still moving:
// the captures go in first, and the stage changes after them join on arrival.
//
// The hold is bounded so stage changes are never starved: at most maxYield before each
// stage batch (a stage batch still goes through at least once per maxYield whatever the
// identity backlog), and not at all once the identity reader has made no progress for
// stalledAfter (it is failing or stopped: stage changes then go on and wait in
// awaiting_identity as usual). maxYield is 5 s, not 1 s: at 1 s, one stage batch a second
// still went through during a million-capture backlog, and its writes took the cores the
// captures needed (the catch-up bench: identities 0.37-0.54 of a raw COPY at 1 s,
// 0.53 at 5 s, with no stage row left awaiting).
const (
	maxYield     = 5 * time.Second
	stalledAfter = 2 * time.Second
	yieldPoll    = 20 * time.Millisecond
)

// identityBacklog is how far behind the identity reader is, from each partition's last
// fetched message (its high watermark against its offset). Until its first fetch the
// backlog is unknown and counts as one: at start both readers join their groups, and a
// stage reader that went first would write its first batches awaiting identity. An empty
// identity topic so costs the stage reader stalledAfter once, at start.
type identityBacklog struct {
	mu     sync.Mutex
	behind map[int]int64 // partition → messages after the last fetched one
	known  bool          // the reader has fetched
	moved  time.Time     // the last fetch (or the start)
	now    func() time.Time
}

func newIdentityBacklog(now func() time.Time) *identityBacklog {
	return &identityBacklog{behind: map[int]int64{}, now: now, moved: now()}
}

// note records a fetched identity batch.
func (b *identityBacklog) note(batch []kafka.Message) {
	if b == nil || len(batch) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range lastPerPartition(batch) {
		b.behind[m.Partition] = max(m.HighWaterMark-m.Offset-1, 0)
	}
	b.moved = b.now()
	b.known = true
}

// state returns the messages the identity reader has still to fetch and when it last
// fetched (or started); a reader that never fetched is infinitely behind.
func (b *identityBacklog) state() (int64, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.known {
		return math.MaxInt64, b.moved
	}
	var n int64
	for _, v := range b.behind {
		n += v
	}
	return n, b.moved
}

// yield waits, before a stage batch is fetched, while the identity reader is more than
// threshold messages behind and moving, for at most maxYield; it returns how long it
// waited.
func (b *identityBacklog) yield(ctx context.Context, threshold int64) time.Duration {
	if b == nil {
		return 0
	}
	start := b.now()
	for waited := false; ; waited = true {
		behind, moved := b.state()
		now := b.now()
		if behind <= threshold || now.Sub(moved) > stalledAfter || now.Sub(start) >= maxYield {
			if !waited {
				return 0
			}
			return now.Sub(start)
		}
		t := time.NewTimer(yieldPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return b.now().Sub(start)
		case <-t.C:
		}
	}
}
