package store

import (
	"context"
	"fmt"
	"time"
)

// ReportCount counts the conversions created on one UTC day (by CreatedAt, not OccurredAt:
// the report reconciles what closedloop produced in a period, and a conversion's creation
// day never changes while a late CRM update can carry an old OccurredAt) per destination,
// platform, conversion name, rule, current state, reason and whether the identity snapshot
// carries anything to match on (a click, a hashed identifier or a lead id).
type ReportCount struct {
	Day            time.Time // UTC midnight
	Destination    string
	Platform       string
	ConversionName string
	Rule           string
	State          State
	Reason         string
	WithIdentifier bool
	Count          int
}

// HourCount counts conversions per destination and state by the UTC hour of their last
// change (UpdatedAt), for the status page's 24-hour chart.
type HourCount struct {
	Hour        time.Time // UTC, on the hour
	Destination string
	State       State
	Count       int
}

// Rejection counts rejected conversions per destination and reason, with one example key.
type Rejection struct {
	Destination string
	Reason      string
	Count       int
	ExampleKey  string
}

const (
	microsPerHour = int64(time.Hour / time.Microsecond)
	microsPerDay  = 24 * microsPerHour
)

// trunc is the SQL for col truncated to the UTC day or hour, as a time column.
func (s *Store) trunc(col, unit string) string {
	if s.pg {
		return fmt.Sprintf("date_trunc('%s', %s, 'UTC')", unit, col)
	}
	per := microsPerDay
	if unit == "hour" {
		per = microsPerHour
	}
	return fmt.Sprintf("((%s / %d) * %d)", col, per, per)
}

// ReportCounts counts the conversions created in [since, until), grouped as ReportCount
// says, ordered by day, destination, conversion name, rule, state and reason.
func (s *Store) ReportCounts(ctx context.Context, since, until time.Time) ([]ReportCount, error) {
	day := s.trunc("created_at", "day")
	r, err := s.db.query(ctx, `SELECT `+day+`, destination, platform, conversion_name, rule, state, reason,
			with_identifier, count(*)
		FROM conversions WHERE created_at >= $1 AND created_at < $2
		GROUP BY `+day+`, destination, platform, conversion_name, rule, state, reason, with_identifier
		ORDER BY 1, destination, conversion_name, rule, state, reason, with_identifier`, s.ts(since), s.ts(until))
	if err != nil {
		return nil, fmt.Errorf("store: report counts: %w", err)
	}
	out, err := collect(r, func(r rows) (ReportCount, error) {
		var c ReportCount
		var state string
		err := r.Scan(tsScan{&c.Day}, &c.Destination, &c.Platform, &c.ConversionName, &c.Rule, &state, &c.Reason,
			boolScan{&c.WithIdentifier}, intScan{&c.Count})
		c.State = State(state)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: report counts: %w", err)
	}
	return out, nil
}

// StageCounts returns the stored stage-change counts of every UTC day that overlaps
// [since, until), ordered by day, source and rule.
func (s *Store) StageCounts(ctx context.Context, since, until time.Time) ([]StageCount, error) {
	r, err := s.db.query(ctx, `SELECT day, source, rule, count FROM stage_counts
		WHERE day >= $1 AND day < $2 ORDER BY day, source, rule`, s.ts(utcDay(since)), s.ts(until))
	if err != nil {
		return nil, fmt.Errorf("store: stage counts: %w", err)
	}
	out, err := collect(r, func(r rows) (StageCount, error) {
		var c StageCount
		return c, r.Scan(tsScan{&c.Day}, &c.Source, &c.Rule, intScan{&c.Count})
	})
	if err != nil {
		return nil, fmt.Errorf("store: stage counts: %w", err)
	}
	return out, nil
}

// OldestAwaiting returns the CreatedAt of the oldest conversion awaiting identity; ok is
// false when none waits.
func (s *Store) OldestAwaiting(ctx context.Context) (t time.Time, ok bool, err error) {
	r, err := s.db.query(ctx, `SELECT min(created_at) FROM conversions WHERE state = 'awaiting_identity'`)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("store: oldest awaiting: %w", err)
	}
	ts, err := collect(r, func(r rows) (time.Time, error) {
		var t time.Time
		return t, r.Scan(tsScan{&t})
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("store: oldest awaiting: %w", err)
	}
	if len(ts) == 0 || ts[0].IsZero() {
		return time.Time{}, false, nil
	}
	return ts[0], true, nil
}

// HourlyCounts counts conversions last changed in [since, until) per UTC hour, destination
// and state, ordered by hour, destination and state.
func (s *Store) HourlyCounts(ctx context.Context, since, until time.Time) ([]HourCount, error) {
	hour := s.trunc("updated_at", "hour")
	r, err := s.db.query(ctx, `SELECT `+hour+`, destination, state, count(*) FROM conversions
		WHERE updated_at >= $1 AND updated_at < $2
		GROUP BY `+hour+`, destination, state ORDER BY 1, destination, state`, s.ts(since), s.ts(until))
	if err != nil {
		return nil, fmt.Errorf("store: hourly counts: %w", err)
	}
	out, err := collect(r, func(r rows) (HourCount, error) {
		var c HourCount
		var state string
		err := r.Scan(tsScan{&c.Hour}, &c.Destination, &state, intScan{&c.Count})
		c.State = State(state)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: hourly counts: %w", err)
	}
	return out, nil
}

// TopRejections returns the limit most frequent (destination, reason) pairs among
// conversions rejected (last changed) in [since, until), most frequent first, each with the
// smallest key as an example.
func (s *Store) TopRejections(ctx context.Context, since, until time.Time, limit int) ([]Rejection, error) {
	if limit < 1 {
		return nil, invalid("limit", "must be at least 1, got %d", limit)
	}
	r, err := s.db.query(ctx, `SELECT destination, reason, count(*), min(key) FROM conversions
		WHERE state = 'rejected' AND updated_at >= $1 AND updated_at < $2
		GROUP BY destination, reason ORDER BY 3 DESC, destination, reason LIMIT $3`, s.ts(since), s.ts(until), limit)
	if err != nil {
		return nil, fmt.Errorf("store: top rejections: %w", err)
	}
	out, err := collect(r, func(r rows) (Rejection, error) {
		var c Rejection
		return c, r.Scan(&c.Destination, &c.Reason, intScan{&c.Count}, &c.ExampleKey)
	})
	if err != nil {
		return nil, fmt.Errorf("store: top rejections: %w", err)
	}
	return out, nil
}
