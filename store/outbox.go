package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Batch is what one consumer poll writes in one transaction: identity captures, new
// conversions, and stage-change counts.
type Batch struct {
	Identities  []IdentityCapture
	Conversions []Conversion
	// Restatements are candidate restatements (KindRestatement, RetractsKey set, a
	// Value): each is inserted only when it changes the conversion's value, see
	// insertRestatements in adjustments.go.
	Restatements []Conversion
	StageCounts  []StageCount
	// Offsets, one per Kafka partition the batch was read from, move each partition's
	// consumed offset forward (never back) in the same transaction; see StageCount for
	// the counts they make exactly-once.
	Offsets []ConsumedOffset
	// Pending are stage changes the enricher must fetch before they can be planned
	// (PendingChange); a key already stored is left alone.
	Pending []PendingChange
}

// BatchResult says what WriteBatch did. Created + Existing == len(Batch.Conversions).
type BatchResult struct {
	Created     int      // conversions inserted
	Existing    int      // conversions whose key was already stored (or repeated in the batch)
	CreatedKeys []string // keys of the inserted conversions, in batch order
	Identities  UpsertResult
	// SkippedCounts is how many attributed stage counts were not added: their message was
	// before its partition's stored consumed offset, so it was counted already.
	SkippedCounts int
	// RestatedKeys are the keys of the restatements inserted, in batch order.
	RestatedKeys []string
}

// ListFilter selects conversions for ListConversions. Zero fields do not filter.
type ListFilter struct {
	Destination string
	State       State
	Kind        string
	Limit       int // 0 = no limit
}

// Claim asks ClaimDue for due rows of one destination.
type Claim struct {
	Destination string
	Owner       string // lease owner: one dispatcher instance
	Limit       int    // most rows to claim; at least 1
	// ReplayLimit caps how many of the claimed rows may be replay rows; 0 = no cap.
	ReplayLimit int
	LeaseFor    time.Duration // lease length; at least 1ms
	Now         time.Time     // zero = the store's clock
}

// convCols are the conversions columns in the order scanConversion reads them.
var convCols = []string{
	"key", "kind", "retracts_key", "destination", "platform", "rule", "mapping_version",
	"source", "object_type", "object_id", "subject_keys", "conversion_name", "occurred_at",
	"value", "currency", "identity", "with_identifier", "state", "reason", "detail", "attempts",
	"next_attempt_at", "lease_owner", "lease_until", "platform_ref", "replay", "created_at", "updated_at",
}

func cols(prefix string) string {
	if prefix == "" {
		return strings.Join(convCols, ", ")
	}
	return prefix + strings.Join(convCols, ", "+prefix)
}

func scanConversion(r rows) (Conversion, error) {
	var (
		c                 Conversion
		subjects, ident   string
		state             string
		value             *float64
		withID            bool
		occ, next, leaseU time.Time
	)
	err := r.Scan(&c.Key, &c.Kind, &c.RetractsKey, &c.Destination, &c.Platform, &c.Rule, &c.MappingVersion,
		&c.Source, &c.ObjectType, &c.ObjectID, textScan{&subjects}, &c.ConversionName, tsScan{&occ},
		&value, &c.Currency, textScan{&ident}, boolScan{&withID}, &state, &c.Reason, &c.Detail, intScan{&c.Attempts},
		tsScan{&next}, &c.LeaseOwner, tsScan{&leaseU}, &c.PlatformRef, boolScan{&c.Replay},
		tsScan{&c.CreatedAt}, tsScan{&c.UpdatedAt})
	if err != nil {
		return Conversion{}, err
	}
	c.State, c.Value, c.OccurredAt, c.NextAttemptAt, c.LeaseUntil = State(state), value, occ, next, leaseU
	if err := json.Unmarshal([]byte(subjects), &c.SubjectKeys); err != nil {
		return Conversion{}, fmt.Errorf("subject keys of conversion %s: %w", c.Key, err)
	}
	if err := json.Unmarshal([]byte(ident), &c.Identity); err != nil {
		return Conversion{}, fmt.Errorf("identity of conversion %s: %w", c.Key, err)
	}
	return c, nil
}

var knownStates = map[State]bool{
	StateAwaitingIdentity: true, StateReady: true, StateInFlight: true, StateSent: true, StateAccepted: true,
	StateRejected: true, StateExpired: true, StateSkipped: true, StateUnmatched: true, StateFailed: true,
	StateHeld: true, StatePartial: true, StateAwaitingEnrichment: true,
}

// hasIdentifier reports whether a snapshot carries anything a platform can match on: a
// click, a hashed identifier or a lead id. It feeds ReportCount.WithIdentifier.
func hasIdentifier(id Identity) bool {
	return len(id.Clicks) > 0 || len(id.Identifiers) > 0 || id.LeadID != ""
}

// convArgs is one conversion encoded for an INSERT, in convCols order minus the lease
// columns (lease_owner, lease_until), which a new row never has.
type convArgs struct {
	c        Conversion
	subjects string
	identity string
	withID   bool
}

func (s *Store) prepareConversion(c Conversion, i int, now time.Time, scratch *[]byte) (convArgs, error) {
	f := func(name string) string { return fmt.Sprintf("conversions[%d].%s", i, name) }
	switch {
	case c.Key == "":
		return convArgs{}, invalid(f("key"), "required")
	case c.Destination == "":
		return convArgs{}, invalid(f("destination"), "required")
	case c.OccurredAt.IsZero():
		return convArgs{}, invalid(f("occurred_at"), "required")
	case !knownStates[c.State]:
		return convArgs{}, invalid(f("state"), "unknown state %q", c.State)
	case c.State == StateInFlight:
		return convArgs{}, invalid(f("state"), "a new conversion cannot be in_flight (only ClaimDue leases rows)")
	}
	if c.Kind == "" {
		c.Kind = KindConversion
	}
	if c.Kind != KindConversion && !Adjustment(c.Kind) {
		return convArgs{}, invalid(f("kind"), "must be %q, %q or %q, got %q", KindConversion, KindRetraction, KindRestatement, c.Kind)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	if c.NextAttemptAt.IsZero() {
		c.NextAttemptAt = c.CreatedAt
	}
	subjects := c.SubjectKeys
	if subjects == nil {
		subjects = []string{}
	}
	sb := string(appendStringsJSON((*scratch)[:0], subjects))
	ib, err := appendIdentityJSON((*scratch)[:0], c.Identity)
	if err != nil {
		return convArgs{}, invalid(f("identity"), "cannot be encoded: %v", err)
	}
	*scratch = ib
	return convArgs{c: c, subjects: sb, identity: string(ib), withID: hasIdentifier(c.Identity)}, nil
}

// WriteBatch writes b in one transaction: identity captures merge as in UpsertIdentities;
// each conversion is inserted unless its key exists (INSERT .. ON CONFLICT (key) DO
// NOTHING: an existing row is never read or changed, so redelivered or replayed batches
// are harmless); restatements are inserted after them, each only when it changes the value
// (see insertRestatements); stage counts are added to the stored counts. A conversion's zero
// CreatedAt becomes the store's clock, zero UpdatedAt and NextAttemptAt become CreatedAt.
// Lease fields of new rows are ignored. Nothing is written when any row is invalid
// (InvalidError) or the transaction fails.
//
// Conversions and identities are idempotent on redelivery. Stage counts are exactly-once
// per Kafka message when they are attributed (StageCount.Topic set) and the batch carries
// the Offsets of its partitions: a count is added only when its message is at or past the
// partition's consumed offset as stored before this transaction, and the offsets move past
// the batch in it (concurrent writers of one partition are serialized on its offset).
// Unattributed counts are added every time. An attributed count outside the batch's
// offsets is an InvalidError.
func (s *Store) WriteBatch(ctx context.Context, b Batch) (BatchResult, error) {
	now := utcMicro(s.now())
	var res BatchResult
	rows := make([]convArgs, 0, len(b.Conversions))
	seen := make(map[string]bool, len(b.Conversions))
	scratch := make([]byte, 0, 512)
	for i, c := range b.Conversions {
		a, err := s.prepareConversion(c, i, now, &scratch)
		if err != nil {
			return BatchResult{}, err
		}
		if seen[c.Key] {
			continue
		}
		seen[c.Key] = true
		rows = append(rows, a)
	}
	restates, err := s.prepareRestatements(b.Restatements, now, &scratch)
	if err != nil {
		return BatchResult{}, err
	}
	counts, err := aggregateStageCounts(b.StageCounts)
	if err != nil {
		return BatchResult{}, err
	}
	next, err := batchOffsets(b)
	if err != nil {
		return BatchResult{}, err
	}
	err = s.db.inTx(ctx, func(q querier) error {
		res = BatchResult{}
		var err error
		counts := counts
		if len(next) > 0 {
			prior, err := s.advanceOffsets(ctx, q, next, now)
			if err != nil {
				return fmt.Errorf("store: consumed offsets: %w", err)
			}
			var kept []StageCount
			kept, res.SkippedCounts = uncounted(b.StageCounts, prior)
			if counts, err = aggregateStageCounts(kept); err != nil {
				return err
			}
		}
		if res.Identities, err = s.upsertIdentities(ctx, q, b.Identities, "identities"); err != nil {
			return err
		}
		created, err := s.insertConversions(ctx, q, rows)
		if err != nil {
			return fmt.Errorf("store: insert conversions: %w", err)
		}
		if err := s.insertPending(ctx, q, b.Pending, now); err != nil {
			return err
		}
		var subjKeys, convKeys []string
		for _, a := range rows {
			if !created[a.c.Key] {
				continue
			}
			res.CreatedKeys = append(res.CreatedKeys, a.c.Key)
			if a.c.State == StateAwaitingIdentity {
				for _, sk := range a.c.SubjectKeys {
					subjKeys, convKeys = append(subjKeys, sk), append(convKeys, a.c.Key)
				}
			}
		}
		if err := s.insertSubjects(ctx, q, subjKeys, convKeys); err != nil {
			return fmt.Errorf("store: insert conversion subjects: %w", err)
		}
		if res.RestatedKeys, err = s.insertRestatements(ctx, q, restates); err != nil {
			return fmt.Errorf("store: insert restatements: %w", err)
		}
		if err := s.addStageCounts(ctx, q, counts); err != nil {
			return fmt.Errorf("store: add stage counts: %w", err)
		}
		return nil
	})
	if err != nil {
		return BatchResult{}, err
	}
	res.Created = len(res.CreatedKeys)
	res.Existing = len(b.Conversions) - res.Created
	return res, nil
}

// insertConversions inserts rows unless their key exists and returns the inserted keys.
func (s *Store) insertConversions(ctx context.Context, q querier, batch []convArgs) (map[string]bool, error) {
	created := make(map[string]bool, len(batch))
	if len(batch) == 0 {
		return created, nil
	}
	const insertCols = `key, kind, retracts_key, destination, platform, rule, mapping_version, source, object_type,
		object_id, subject_keys, conversion_name, occurred_at, value, currency, identity, with_identifier, state,
		reason, detail, attempts, next_attempt_at, platform_ref, replay, created_at, updated_at`
	if s.pg {
		if copiedKeys, copied, err := s.copyNewConversions(ctx, q, batch); err != nil || copied {
			return copiedKeys, err
		}
		n := len(batch)
		var (
			key, kind, retracts, dest, plat, rule, mver = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			src, otype, oid, subj, cname, cur, ident    = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			state, reason, detail, ref                  = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			occ, next, crt, upd                         = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
			value                                       = make([]*float64, n)
			withID, replay                              = make([]bool, n), make([]bool, n)
			attempts                                    = make([]int32, n)
		)
		for i, a := range batch {
			c := a.c
			key[i], kind[i], retracts[i], dest[i], plat[i], rule[i], mver[i] = c.Key, c.Kind, c.RetractsKey, c.Destination, c.Platform, c.Rule, c.MappingVersion
			src[i], otype[i], oid[i], subj[i], cname[i], cur[i], ident[i] = c.Source, c.ObjectType, c.ObjectID, a.subjects, c.ConversionName, c.Currency, a.identity
			state[i], reason[i], detail[i], ref[i] = string(c.State), c.Reason, c.Detail, c.PlatformRef
			occ[i], next[i], crt[i], upd[i] = utcMicro(c.OccurredAt), utcMicro(c.NextAttemptAt), utcMicro(c.CreatedAt), utcMicro(c.UpdatedAt)
			value[i], withID[i], replay[i], attempts[i] = c.Value, a.withID, c.Replay, int32(c.Attempts)
		}
		r, err := q.query(ctx, `INSERT INTO conversions (`+insertCols+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::text[], $9::text[], $10::text[], $11::json[], $12::text[], $13::timestamptz[], $14::float8[],
				$15::text[], $16::json[], $17::bool[], $18::text[], $19::text[], $20::text[], $21::int4[],
				$22::timestamptz[], $23::text[], $24::bool[], $25::timestamptz[], $26::timestamptz[])
			ON CONFLICT (key) DO NOTHING RETURNING key`,
			key, kind, retracts, dest, plat, rule, mver, src, otype, oid, subj, cname, occ, value, cur, ident,
			withID, state, reason, detail, attempts, next, ref, replay, crt, upd)
		if err != nil {
			return nil, err
		}
		keys, err := collect(r, func(r rows) (string, error) { var k string; return k, r.Scan(&k) })
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			created[k] = true
		}
		return created, nil
	}
	stmt := `INSERT INTO conversions (` + insertCols + `) VALUES (` + placeholders(1, 26) + `) ON CONFLICT (key) DO NOTHING`
	for _, a := range batch {
		c := a.c
		var value any
		if c.Value != nil {
			value = *c.Value
		}
		n, err := q.exec(ctx, stmt, c.Key, c.Kind, c.RetractsKey, c.Destination, c.Platform, c.Rule, c.MappingVersion,
			c.Source, c.ObjectType, c.ObjectID, a.subjects, c.ConversionName, s.ts(c.OccurredAt), value, c.Currency,
			a.identity, a.withID, string(c.State), c.Reason, c.Detail, c.Attempts, s.ts(c.NextAttemptAt), c.PlatformRef,
			c.Replay, s.ts(c.CreatedAt), s.ts(c.UpdatedAt))
		if err != nil {
			return nil, err
		}
		if n > 0 {
			created[c.Key] = true
		}
	}
	return created, nil
}

// conversionCols are the columns a new conversion row is written with, in insert order.
var conversionCols = []string{"key", "kind", "retracts_key", "destination", "platform", "rule", "mapping_version",
	"source", "object_type", "object_id", "subject_keys", "conversion_name", "occurred_at", "value", "currency",
	"identity", "with_identifier", "state", "reason", "detail", "attempts", "next_attempt_at", "platform_ref",
	"replay", "created_at", "updated_at"}

// copyNewConversions is insertConversions' fast path on PostgreSQL: it finds which keys of
// batch are stored already (one index probe each, whatever the planner's statistics of a
// freshly filled table say) and COPYs the others in, under a savepoint. COPY costs the
// server a fraction of an INSERT .. ON CONFLICT from arrays, and the client streams it in
// small chunks instead of building one message of every row's columns. When a concurrent
// writer stored one of the keys meanwhile (a rebalance: two workers on one partition), the
// COPY fails on the primary key, the savepoint is rolled back and copied is false: the
// caller inserts the batch with ON CONFLICT DO NOTHING instead.
func (s *Store) copyNewConversions(ctx context.Context, q querier, batch []convArgs) (created map[string]bool, copied bool, err error) {
	c, ok := q.(copier)
	if !ok {
		return nil, false, nil
	}
	keys := make([]string, len(batch))
	for i, a := range batch {
		keys[i] = a.c.Key
	}
	r, err := q.query(ctx, `SELECT c.key FROM unnest($1::text[]) AS k(key)
		CROSS JOIN LATERAL (SELECT key FROM conversions WHERE key = k.key LIMIT 1) AS c`, keys)
	if err != nil {
		return nil, false, err
	}
	stored, err := collect(r, func(r rows) (string, error) { var k string; return k, r.Scan(&k) })
	if err != nil {
		return nil, false, err
	}
	exists := make(map[string]bool, len(stored))
	for _, k := range stored {
		exists[k] = true
	}
	created = make(map[string]bool, len(batch)-len(stored))
	rows := make([][]any, 0, len(batch)-len(stored))
	for _, a := range batch {
		cv := a.c
		if exists[cv.Key] {
			continue
		}
		created[cv.Key] = true
		var value any
		if cv.Value != nil {
			value = *cv.Value
		}
		rows = append(rows, []any{cv.Key, cv.Kind, cv.RetractsKey, cv.Destination, cv.Platform, cv.Rule, cv.MappingVersion,
			cv.Source, cv.ObjectType, cv.ObjectID, a.subjects, cv.ConversionName, utcMicro(cv.OccurredAt), value, cv.Currency,
			a.identity, a.withID, string(cv.State), cv.Reason, cv.Detail, int32(cv.Attempts), utcMicro(cv.NextAttemptAt), cv.PlatformRef,
			cv.Replay, utcMicro(cv.CreatedAt), utcMicro(cv.UpdatedAt)})
	}
	if len(rows) == 0 {
		return created, true, nil
	}
	if _, err := q.exec(ctx, "SAVEPOINT copy_conversions"); err != nil {
		return nil, false, err
	}
	if _, err := c.copyFrom(ctx, "conversions", conversionCols, rows); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != pgerrcode.UniqueViolation {
			return nil, false, err
		}
		if _, err := q.exec(ctx, "ROLLBACK TO SAVEPOINT copy_conversions"); err != nil {
			return nil, false, err
		}
		return nil, false, nil
	}
	if _, err := q.exec(ctx, "RELEASE SAVEPOINT copy_conversions"); err != nil {
		return nil, false, err
	}
	return created, true, nil
}

// placeholders is "$from, ..., $(from+n-1)".
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}

func (s *Store) insertSubjects(ctx context.Context, q querier, subjects, keys []string) error {
	if len(subjects) == 0 {
		return nil
	}
	if s.pg {
		_, err := q.exec(ctx, `INSERT INTO conversion_subjects (subject_key, key)
			SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, subjects, keys)
		return err
	}
	for i := range subjects {
		if _, err := q.exec(ctx, `INSERT INTO conversion_subjects (subject_key, key) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, subjects[i], keys[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) deleteSubjects(ctx context.Context, q querier, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := q.exec(ctx, `DELETE FROM conversion_subjects WHERE `+s.in("key", 1), s.list(keys))
	return err
}

// aggregateStageCounts sums counts per (UTC day, source, rule), in a stable order.
func aggregateStageCounts(in []StageCount) ([]StageCount, error) {
	type k struct {
		day          time.Time
		source, rule string
	}
	sum := map[k]int{}
	var order []k
	for i, sc := range in {
		if sc.Day.IsZero() {
			return nil, invalid(fmt.Sprintf("stage_counts[%d].day", i), "required")
		}
		if sc.Count < 0 {
			return nil, invalid(fmt.Sprintf("stage_counts[%d].count", i), "must not be negative, got %d", sc.Count)
		}
		key := k{utcDay(sc.Day), sc.Source, sc.Rule}
		if _, ok := sum[key]; !ok {
			order = append(order, key)
		}
		sum[key] += sc.Count
	}
	out := make([]StageCount, 0, len(order))
	for _, key := range order {
		out = append(out, StageCount{Day: key.day, Source: key.source, Rule: key.rule, Count: sum[key]})
	}
	return out, nil
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func (s *Store) addStageCounts(ctx context.Context, q querier, counts []StageCount) error {
	if len(counts) == 0 {
		return nil
	}
	const conflict = ` ON CONFLICT (day, source, rule) DO UPDATE SET count = stage_counts.count + excluded.count`
	if s.pg {
		n := len(counts)
		days, srcs, rules, ns := make([]time.Time, n), make([]string, n), make([]string, n), make([]int64, n)
		for i, c := range counts {
			days[i], srcs[i], rules[i], ns[i] = c.Day, c.Source, c.Rule, int64(c.Count)
		}
		_, err := q.exec(ctx, `INSERT INTO stage_counts (day, source, rule, count)
			SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[])`+conflict, days, srcs, rules, ns)
		return err
	}
	for _, c := range counts {
		if _, err := q.exec(ctx, `INSERT INTO stage_counts (day, source, rule, count) VALUES ($1, $2, $3, $4)`+conflict,
			s.ts(c.Day), c.Source, c.Rule, c.Count); err != nil {
			return err
		}
	}
	return nil
}

// ExistingKeys reports which of keys are stored, in one query. Absent keys map to false
// or are missing; only stored keys are set true.
func (s *Store) ExistingKeys(ctx context.Context, keys []string) (map[string]bool, error) {
	out := make(map[string]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	r, err := s.db.query(ctx, `SELECT key FROM conversions WHERE `+s.in("key", 1), s.list(keys))
	if err != nil {
		return nil, fmt.Errorf("store: existing keys: %w", err)
	}
	found, err := collect(r, func(r rows) (string, error) { var k string; return k, r.Scan(&k) })
	if err != nil {
		return nil, fmt.Errorf("store: existing keys: %w", err)
	}
	for _, k := range found {
		out[k] = true
	}
	return out, nil
}

// AwaitingForSubjects returns the conversions still awaiting identity whose SubjectKeys
// include any of subjectKeys, oldest first, through the conversion_subjects index.
func (s *Store) AwaitingForSubjects(ctx context.Context, subjectKeys []string) ([]Conversion, error) {
	if len(subjectKeys) == 0 {
		return nil, nil
	}
	return s.listQuery(ctx, "awaiting for subjects", `SELECT `+cols("")+` FROM conversions
		WHERE state = 'awaiting_identity'
		AND key IN (SELECT key FROM conversion_subjects WHERE `+s.in("subject_key", 1)+`)
		ORDER BY created_at, key`, s.list(subjectKeys))
}

// UpdateAwaiting applies the join's new result to rows that are STILL awaiting identity,
// in one transaction: Identity (the snapshot), State, Reason, Detail and NextAttemptAt
// (zero = now) of each update, matched by Key. State must be ready, skipped, expired,
// unmatched or awaiting_identity (still waiting, with a fresher snapshot); a terminal state
// needs a Reason. Rows that left awaiting_identity meanwhile are not touched. It returns
// how many rows changed.
func (s *Store) UpdateAwaiting(ctx context.Context, updates []Conversion) (int, error) {
	if len(updates) == 0 {
		return 0, nil
	}
	now := utcMicro(s.now())
	type upd struct {
		key, identity, state, reason, detail string
		withID                               bool
		next                                 time.Time
	}
	byKey := map[string]int{}
	var us []upd
	for i, c := range updates {
		f := func(name string) string { return fmt.Sprintf("updates[%d].%s", i, name) }
		switch c.State {
		case StateReady, StateAwaitingIdentity:
		case StateSkipped, StateExpired, StateUnmatched:
			if c.Reason == "" {
				return 0, invalid(f("reason"), "required for state %s", c.State)
			}
		default:
			return 0, invalid(f("state"), "must be ready, skipped, expired, unmatched or awaiting_identity, got %q", c.State)
		}
		if c.Key == "" {
			return 0, invalid(f("key"), "required")
		}
		ib, err := appendIdentityJSON(nil, c.Identity)
		if err != nil {
			return 0, err
		}
		next := utcMicro(c.NextAttemptAt)
		if next.IsZero() {
			next = now
		}
		u := upd{c.Key, string(ib), string(c.State), c.Reason, c.Detail, hasIdentifier(c.Identity), next}
		if j, ok := byKey[c.Key]; ok {
			us[j] = u // the last update of a key wins
			continue
		}
		byKey[c.Key] = len(us)
		us = append(us, u)
	}
	n := 0
	err := s.db.inTx(ctx, func(q querier) error {
		n = 0
		var left []string
		if s.pg {
			keys, idents, states, reasons, details := make([]string, len(us)), make([]string, len(us)), make([]string, len(us)), make([]string, len(us)), make([]string, len(us))
			withIDs, nexts := make([]bool, len(us)), make([]time.Time, len(us))
			for i, u := range us {
				keys[i], idents[i], states[i], reasons[i], details[i], withIDs[i], nexts[i] = u.key, u.identity, u.state, u.reason, u.detail, u.withID, u.next
			}
			// Lock the rows in key order first: the stage-change and identity pipelines
			// re-join the same conversions concurrently, and an UPDATE locks in whatever
			// order its plan visits them (two of them deadlocked, each costing a second).
			if _, err := q.exec(ctx, `SELECT 1 FROM conversions WHERE key = ANY($1) AND state = 'awaiting_identity'
				ORDER BY key FOR UPDATE`, keys); err != nil {
				return err
			}
			r, err := q.query(ctx, `UPDATE conversions c SET identity = u.identity, with_identifier = u.with_id,
					state = u.state, reason = u.reason, detail = u.detail, next_attempt_at = u.next, updated_at = $8
				FROM unnest($1::text[], $2::json[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
					AS u(key, identity, with_id, state, reason, detail, next)
				WHERE c.key = u.key AND c.state = 'awaiting_identity'
				RETURNING c.key, c.state`, keys, idents, withIDs, states, reasons, details, nexts, now)
			if err != nil {
				return err
			}
			type ks struct{ key, state string }
			got, err := collect(r, func(r rows) (ks, error) { var v ks; return v, r.Scan(&v.key, &v.state) })
			if err != nil {
				return err
			}
			n = len(got)
			for _, g := range got {
				if g.state != string(StateAwaitingIdentity) {
					left = append(left, g.key)
				}
			}
		} else {
			for _, u := range us {
				m, err := q.exec(ctx, `UPDATE conversions SET identity = $2, with_identifier = $3, state = $4,
						reason = $5, detail = $6, next_attempt_at = $7, updated_at = $8
					WHERE key = $1 AND state = 'awaiting_identity'`,
					u.key, u.identity, u.withID, u.state, u.reason, u.detail, s.ts(u.next), s.ts(now))
				if err != nil {
					return err
				}
				n += int(m)
				if m > 0 && u.state != string(StateAwaitingIdentity) {
					left = append(left, u.key)
				}
			}
		}
		return s.deleteSubjects(ctx, q, left)
	})
	if err != nil {
		return 0, fmt.Errorf("store: update awaiting: %w", err)
	}
	return n, nil
}

// ExpireAwaiting moves every conversion awaiting identity created before createdBefore to
// unmatched with reason, and returns how many.
func (s *Store) ExpireAwaiting(ctx context.Context, createdBefore time.Time, reason string) (int, error) {
	if reason == "" {
		return 0, invalid("reason", "required")
	}
	n := 0
	err := s.db.inTx(ctx, func(q querier) error {
		which := `state = 'awaiting_identity' AND created_at < $1`
		if s.pg { // lock the rows in key order, as UpdateAwaiting does
			which = `key IN (SELECT key FROM conversions WHERE ` + which + ` ORDER BY key FOR UPDATE)`
		}
		r, err := q.query(ctx, `UPDATE conversions SET state = 'unmatched', reason = $2, detail = '', updated_at = $3
			WHERE `+which+` RETURNING key`,
			s.ts(createdBefore), reason, s.ts(s.now()))
		if err != nil {
			return err
		}
		keys, err := collect(r, func(r rows) (string, error) { var k string; return k, r.Scan(&k) })
		if err != nil {
			return err
		}
		n = len(keys)
		return s.deleteSubjects(ctx, q, keys)
	})
	if err != nil {
		return 0, fmt.Errorf("store: expire awaiting: %w", err)
	}
	return n, nil
}

// ClaimDue leases up to c.Limit rows of c.Destination that are ready with NextAttemptAt
// at or before c.Now, oldest NextAttemptAt first, at most c.ReplayLimit of them replay rows
// (0 = no cap), to c.Owner until c.Now+c.LeaseFor, in one statement, and returns them in
// state in_flight, oldest first. On PostgreSQL rows another claimer holds are skipped
// (FOR UPDATE SKIP LOCKED), so concurrent claimers never get the same row.
func (s *Store) ClaimDue(ctx context.Context, c Claim) ([]Conversion, error) {
	switch {
	case c.Destination == "":
		return nil, invalid("claim.destination", "required")
	case c.Owner == "":
		return nil, invalid("claim.owner", "required")
	case c.Limit < 1:
		return nil, invalid("claim.limit", "must be at least 1, got %d", c.Limit)
	case c.ReplayLimit < 0:
		return nil, invalid("claim.replay_limit", "must not be negative, got %d", c.ReplayLimit)
	case c.LeaseFor < time.Millisecond:
		return nil, invalid("claim.lease_for", "must be at least 1ms, got %s", c.LeaseFor)
	}
	now := c.Now
	if now.IsZero() {
		now = s.now()
	}
	replayLimit := c.Limit
	if c.ReplayLimit > 0 && c.ReplayLimit < c.Limit {
		replayLimit = c.ReplayLimit
	}
	var query string
	if s.pg {
		query = `WITH fresh AS (
				SELECT key, next_attempt_at FROM conversions
				WHERE destination = $1 AND state = 'ready' AND next_attempt_at <= $2 AND NOT replay
				ORDER BY next_attempt_at, key LIMIT $5 FOR UPDATE SKIP LOCKED
			), replays AS (
				SELECT key, next_attempt_at FROM conversions
				WHERE destination = $1 AND state = 'ready' AND next_attempt_at <= $2 AND replay
				ORDER BY next_attempt_at, key LIMIT $6 FOR UPDATE SKIP LOCKED
			), pick AS (
				SELECT key FROM (SELECT * FROM fresh UNION ALL SELECT * FROM replays) AS cand
				ORDER BY next_attempt_at, key LIMIT $5
			)
			UPDATE conversions c SET state = 'in_flight', lease_owner = $3, lease_until = $4, updated_at = $2
			FROM pick WHERE c.key = pick.key
			RETURNING ` + cols("c.")
	} else {
		query = `UPDATE conversions SET state = 'in_flight', lease_owner = $3, lease_until = $4, updated_at = $2
			WHERE key IN (
				SELECT key FROM (
					SELECT * FROM (SELECT key, next_attempt_at FROM conversions
						WHERE destination = $1 AND state = 'ready' AND next_attempt_at <= $2 AND NOT replay
						ORDER BY next_attempt_at, key LIMIT $5)
					UNION ALL
					SELECT * FROM (SELECT key, next_attempt_at FROM conversions
						WHERE destination = $1 AND state = 'ready' AND next_attempt_at <= $2 AND replay
						ORDER BY next_attempt_at, key LIMIT $6)
				) ORDER BY next_attempt_at, key LIMIT $5)
			RETURNING ` + cols("")
	}
	out, err := s.listQuery(ctx, "claim due", query, c.Destination, s.ts(now), c.Owner, s.ts(now.Add(c.LeaseFor)), c.Limit, replayLimit)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NextAttemptAt.Equal(out[j].NextAttemptAt) {
			return out[i].NextAttemptAt.Before(out[j].NextAttemptAt)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

var outcomeStates = map[State]bool{
	StateReady: true, StateSent: true, StateAccepted: true, StateRejected: true,
	StateExpired: true, StateSkipped: true, StateFailed: true, StateHeld: true, StatePartial: true,
}

// RecordOutcomes applies outs in one transaction to the rows they name that are either in
// flight under a lease held by owner, or sent (a status-poll result); other rows (lease
// lost to expiry and re-claimed, already final) are left alone. Each applied outcome sets
// State, Reason and Detail, sets NextAttemptAt when State is ready (zero = now), replaces
// PlatformRef when given, adds one to Attempts when CountAttempt, and clears the lease.
// A later outcome for the same key in outs wins.
func (s *Store) RecordOutcomes(ctx context.Context, owner string, outs []Outcome, now time.Time) error {
	if len(outs) == 0 {
		return nil
	}
	if owner == "" {
		return invalid("owner", "required")
	}
	if now.IsZero() {
		now = s.now()
	}
	now = utcMicro(now)
	byKey := map[string]int{}
	var uniq []Outcome
	for i, o := range outs {
		if o.Key == "" {
			return invalid(fmt.Sprintf("outcomes[%d].key", i), "required")
		}
		if !outcomeStates[o.State] {
			return invalid(fmt.Sprintf("outcomes[%d].state", i), "must be ready, held, sent, accepted, partial, rejected, expired, skipped or failed, got %q", o.State)
		}
		if (o.State == StateReady || o.State == StateHeld) && o.NextAttemptAt.IsZero() {
			o.NextAttemptAt = now
		}
		if j, ok := byKey[o.Key]; ok {
			uniq[j] = o
			continue
		}
		byKey[o.Key] = len(uniq)
		uniq = append(uniq, o)
	}
	applied := 0
	err := s.db.inTx(ctx, func(q querier) error {
		applied = 0
		if s.pg {
			n := len(uniq)
			keys, states, reasons, details, refs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			nexts, incs := make([]*time.Time, n), make([]int32, n)
			for i, o := range uniq {
				keys[i], states[i], reasons[i], details[i], refs[i] = o.Key, string(o.State), o.Reason, o.Detail, o.PlatformRef
				if o.State == StateReady || o.State == StateHeld {
					t := utcMicro(o.NextAttemptAt)
					nexts[i] = &t
				}
				if o.CountAttempt {
					incs[i] = 1
				}
			}
			m, err := q.exec(ctx, `UPDATE conversions c SET state = o.state, reason = o.reason, detail = o.detail,
					next_attempt_at = COALESCE(o.next, c.next_attempt_at),
					platform_ref = CASE WHEN o.ref <> '' THEN o.ref ELSE c.platform_ref END,
					attempts = c.attempts + o.inc, lease_owner = '', lease_until = NULL, updated_at = $9
				FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::int4[])
					AS o(key, state, reason, detail, next, ref, inc)
				WHERE c.key = o.key AND ((c.state = 'in_flight' AND c.lease_owner = $8) OR c.state = 'sent')`,
				keys, states, reasons, details, nexts, refs, incs, owner, now)
			applied = int(m)
			return err
		}
		for _, o := range uniq {
			inc := 0
			if o.CountAttempt {
				inc = 1
			}
			var next any
			if o.State == StateReady || o.State == StateHeld {
				next = s.ts(o.NextAttemptAt)
			}
			m, err := q.exec(ctx, `UPDATE conversions SET state = $2, reason = $3, detail = $4,
					next_attempt_at = COALESCE($5, next_attempt_at),
					platform_ref = CASE WHEN $6 <> '' THEN $6 ELSE platform_ref END,
					attempts = attempts + $7, lease_owner = '', lease_until = NULL, updated_at = $9
				WHERE key = $1 AND ((state = 'in_flight' AND lease_owner = $8) OR state = 'sent')`,
				o.Key, string(o.State), o.Reason, o.Detail, next, o.PlatformRef, inc, owner, s.ts(now))
			if err != nil {
				return err
			}
			applied += int(m)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: record outcomes: %w", err)
	}
	if applied < len(uniq) {
		s.log.Warn("outcomes for rows no longer leased by this owner were not recorded",
			zap.String("owner", owner), zap.Int("outcomes", len(uniq)), zap.Int("recorded", applied))
	}
	return nil
}

// ReleaseHeld returns held rows whose hold probe is due (NextAttemptAt at or before now)
// to ready, otherwise unchanged, and returns how many.
func (s *Store) ReleaseHeld(ctx context.Context, now time.Time) (int, error) {
	if now.IsZero() {
		now = s.now()
	}
	n, err := s.db.exec(ctx, `UPDATE conversions SET state = 'ready', updated_at = $1
		WHERE state = 'held' AND next_attempt_at <= $1`, s.ts(now))
	if err != nil {
		return 0, fmt.Errorf("store: release held rows: %w", err)
	}
	return int(n), nil
}

// RetargetHeld points the held rows of one rule and destination at conversion (the
// mapping was fixed) and makes them due now; rows already naming conversion are left
// alone. It returns how many rows changed.
func (s *Store) RetargetHeld(ctx context.Context, rule, destination, conversion string, now time.Time) (int, error) {
	if now.IsZero() {
		now = s.now()
	}
	n, err := s.db.exec(ctx, `UPDATE conversions SET conversion_name = $4, state = 'ready', next_attempt_at = $1, updated_at = $1
		WHERE state = 'held' AND rule = $2 AND destination = $3 AND conversion_name <> $4`, s.ts(now), rule, destination, conversion)
	if err != nil {
		return 0, fmt.Errorf("store: retarget held rows: %w", err)
	}
	return int(n), nil
}

// ReleaseExpiredLeases returns rows in flight whose lease ended before now to ready,
// otherwise unchanged (Attempts and NextAttemptAt kept), and returns how many.
func (s *Store) ReleaseExpiredLeases(ctx context.Context, now time.Time) (int, error) {
	if now.IsZero() {
		now = s.now()
	}
	n, err := s.db.exec(ctx, `UPDATE conversions SET state = 'ready', lease_owner = '', lease_until = NULL, updated_at = $1
		WHERE state = 'in_flight' AND lease_until < $1`, s.ts(now))
	if err != nil {
		return 0, fmt.Errorf("store: release expired leases: %w", err)
	}
	return int(n), nil
}

// SentForPolling returns up to limit rows of destination in state sent that carry a
// PlatformRef, least recently changed first.
func (s *Store) SentForPolling(ctx context.Context, destination string, limit int) ([]Conversion, error) {
	if limit < 1 {
		return nil, invalid("limit", "must be at least 1, got %d", limit)
	}
	return s.listQuery(ctx, "sent for polling", `SELECT `+cols("")+` FROM conversions
		WHERE destination = $1 AND state = 'sent' AND platform_ref <> ''
		ORDER BY updated_at, key LIMIT $2`, destination, limit)
}

// Get returns the conversion with key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Conversion, error) {
	out, err := s.listQuery(ctx, "get", `SELECT `+cols("")+` FROM conversions WHERE key = $1`, key)
	if err != nil {
		return Conversion{}, err
	}
	if len(out) == 0 {
		return Conversion{}, fmt.Errorf("store: conversion %s: %w", key, ErrNotFound)
	}
	return out[0], nil
}

// ListConversions returns the conversions f selects, oldest first (CreatedAt, then Key).
// It is for tests, chaos checks and the status page, not for hot paths.
func (s *Store) ListConversions(ctx context.Context, f ListFilter) ([]Conversion, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Destination != "" {
		add("destination = $%d", f.Destination)
	}
	if f.State != "" {
		add("state = $%d", string(f.State))
	}
	if f.Kind != "" {
		add("kind = $%d", f.Kind)
	}
	q := `SELECT ` + cols("") + ` FROM conversions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at, key"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	return s.listQuery(ctx, "list conversions", q, args...)
}

// CountByState counts conversions per destination and state.
func (s *Store) CountByState(ctx context.Context) (map[string]map[State]int, error) {
	r, err := s.db.query(ctx, `SELECT destination, state, count(*) FROM conversions GROUP BY destination, state`)
	if err != nil {
		return nil, fmt.Errorf("store: count by state: %w", err)
	}
	out := map[string]map[State]int{}
	_, err = collect(r, func(r rows) (struct{}, error) {
		var dest, state string
		var n int
		if err := r.Scan(&dest, &state, intScan{&n}); err != nil {
			return struct{}{}, err
		}
		if out[dest] == nil {
			out[dest] = map[State]int{}
		}
		out[dest][State(state)] = n
		return struct{}{}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: count by state: %w", err)
	}
	return out, nil
}

func (s *Store) listQuery(ctx context.Context, what, query string, args ...any) ([]Conversion, error) {
	r, err := s.db.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	out, err := collect(r, scanConversion)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}
