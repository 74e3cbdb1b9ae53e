package uploader

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/closedloop/closedloop/store"
)

// memOutbox is an in-memory Outbox with the store's lease and state rules, for tests that
// need to look inside (claims made, rows per state) without a database.
type memOutbox struct {
	mu     sync.Mutex
	rows   map[string]*store.Conversion
	claims []store.Claim
}

var _ Outbox = (*memOutbox)(nil)

func newMemOutbox(rows ...store.Conversion) *memOutbox {
	m := &memOutbox{rows: map[string]*store.Conversion{}}
	for _, c := range rows {
		m.rows[c.Key] = &c
	}
	return m
}

func (m *memOutbox) ClaimDue(ctx context.Context, c store.Claim) ([]store.Conversion, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = append(m.claims, c)
	var due []*store.Conversion
	for _, r := range m.rows {
		if r.Destination == c.Destination && r.State == store.StateReady && !r.NextAttemptAt.After(c.Now) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *store.Conversion) int {
		if n := a.NextAttemptAt.Compare(b.NextAttemptAt); n != 0 {
			return n
		}
		return strings.Compare(a.Key, b.Key)
	})
	var out []store.Conversion
	replays := 0
	for _, r := range due {
		if len(out) == c.Limit {
			break
		}
		if r.Replay {
			if replays == c.ReplayLimit {
				continue
			}
			replays++
		}
		r.State, r.LeaseOwner, r.LeaseUntil, r.UpdatedAt = store.StateInFlight, c.Owner, c.Now.Add(c.LeaseFor), c.Now
		out = append(out, *r)
	}
	return out, nil
}

func (m *memOutbox) RecordOutcomes(ctx context.Context, owner string, outs []store.Outcome, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// One transaction: validate everything first.
	for _, o := range outs {
		r, ok := m.rows[o.Key]
		switch {
		case !ok:
			return fmt.Errorf("record %s: no such row", o.Key)
		case r.State == store.StateSent && o.State != store.StateInFlight:
			// A polled row: not leased.
		case r.State != store.StateInFlight || r.LeaseOwner != owner:
			return fmt.Errorf("record %s: not leased by %s (state %s, owner %q)", o.Key, owner, r.State, r.LeaseOwner)
		}
		if o.State.Terminal() && o.Reason == "" {
			return fmt.Errorf("record %s: terminal state %s without a reason", o.Key, o.State)
		}
	}
	for _, o := range outs {
		r := m.rows[o.Key]
		r.State, r.Reason, r.Detail, r.UpdatedAt = o.State, o.Reason, o.Detail, now
		r.LeaseOwner, r.LeaseUntil = "", time.Time{}
		if o.CountAttempt {
			r.Attempts++
		}
		if o.State == store.StateReady {
			r.NextAttemptAt = o.NextAttemptAt
		}
		if o.PlatformRef != "" {
			r.PlatformRef = o.PlatformRef
		}
	}
	return nil
}

func (m *memOutbox) ReleaseExpiredLeases(ctx context.Context, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.rows {
		if r.State == store.StateInFlight && r.LeaseUntil.Before(now) {
			r.State, r.LeaseOwner, r.LeaseUntil = store.StateReady, "", time.Time{}
			n++
		}
	}
	return n, nil
}

func (m *memOutbox) SentForPolling(ctx context.Context, destination string, limit int) ([]store.Conversion, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Conversion
	for _, r := range m.rows {
		if r.Destination == destination && r.State == store.StateSent && r.PlatformRef != "" {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b store.Conversion) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// get returns a copy of row key.
func (m *memOutbox) get(key string) store.Conversion {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *m.rows[key]
}

// all returns copies of every row, by key.
func (m *memOutbox) all() []store.Conversion {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]store.Conversion, 0, len(m.rows))
	for _, r := range m.rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b store.Conversion) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func (m *memOutbox) claimLog() []store.Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.claims)
}
