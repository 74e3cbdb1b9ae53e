package store

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// prepareRestatements validates and encodes the batch's candidate restatements (first of
// each key only) and orders them in rounds: round r holds the r-th candidate, by
// OccurredAt, of every conversion (RetractsKey). One round is one statement, so a batch
// with one candidate per conversion (the usual case) is one statement, and several
// changes of one conversion in one batch are applied in the order they happened, each
// compared with the one before. A restatement is ready at once: it names its conversion
// by key.
func (s *Store) prepareRestatements(in []Conversion, now time.Time, scratch *[]byte) ([][]convArgs, error) {
	if len(in) == 0 {
		return nil, nil
	}
	byConv := map[string][]convArgs{}
	var order []string
	seen := make(map[string]bool, len(in))
	for i, c := range in {
		f := func(name string) string { return fmt.Sprintf("restatements[%d].%s", i, name) }
		switch {
		case c.Kind != KindRestatement:
			return nil, invalid(f("kind"), "must be %q, got %q", KindRestatement, c.Kind)
		case c.RetractsKey == "":
			return nil, invalid(f("retracts_key"), "required: the key of the conversion it restates")
		case c.RetractsKey == c.Key:
			return nil, invalid(f("retracts_key"), "must differ from key")
		case c.Value == nil:
			return nil, invalid(f("value"), "required: a restatement sends a new value")
		case c.State != StateReady:
			return nil, invalid(f("state"), "must be ready, got %q", c.State)
		}
		a, err := s.prepareConversion(c, i, now, scratch)
		if err != nil {
			return nil, err
		}
		if seen[c.Key] {
			continue
		}
		seen[c.Key] = true
		if _, ok := byConv[c.RetractsKey]; !ok {
			order = append(order, c.RetractsKey)
		}
		byConv[c.RetractsKey] = append(byConv[c.RetractsKey], a)
	}
	var rounds [][]convArgs
	for _, k := range order {
		list := byConv[k]
		sort.SliceStable(list, func(i, j int) bool { return list[i].c.OccurredAt.Before(list[j].c.OccurredAt) })
		for r, a := range list {
			if r == len(rounds) {
				rounds = append(rounds, nil)
			}
			rounds[r] = append(rounds[r], a)
		}
	}
	return rounds, nil
}

// insertRestatements inserts, round by round (see prepareRestatements), each candidate
// restatement whose key is new and that changes the conversion it restates, in the batch's
// transaction, after its conversions: the conversion (RetractsKey) exists, no retraction
// of it happened at or before the candidate, and its latest value (its own or its latest
// restatement's, by occurred_at) is older than the candidate and differs from it in value
// or currency. Replaying a change therefore restates nothing, nor does a repeated change
// with the same amount, nor an older change arriving late. It returns the inserted keys.
func (s *Store) insertRestatements(ctx context.Context, q querier, rounds [][]convArgs) ([]string, error) {
	var out []string
	for _, r := range rounds {
		keys, err := s.insertRestatementRound(ctx, q, r)
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
	}
	return out, nil
}

// insertRestatementRound is one round: at most one candidate per conversion. On
// PostgreSQL it is one statement.
func (s *Store) insertRestatementRound(ctx context.Context, q querier, batch []convArgs) ([]string, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	const insertCols = `key, kind, retracts_key, destination, platform, rule, mapping_version, source, object_type,
		object_id, subject_keys, conversion_name, occurred_at, value, currency, identity, with_identifier, state,
		reason, detail, attempts, next_attempt_at, platform_ref, replay, created_at, updated_at`
	// latest is the value the platform holds for conversion $k, by occurred_at.
	const changes = `NOT EXISTS (SELECT 1 FROM conversions r WHERE r.retracts_key = u.retracts_key AND r.kind = 'retraction'
			AND r.occurred_at <= u.occurred_at)
		AND EXISTS (SELECT 1 FROM (
				SELECT t.occurred_at, t.value, t.currency FROM conversions t
				WHERE t.key = u.retracts_key OR (t.retracts_key = u.retracts_key AND t.kind = 'restatement')
				ORDER BY t.occurred_at DESC, t.created_at DESC LIMIT 1) AS latest
			WHERE u.occurred_at > latest.occurred_at
				AND (u.value %s latest.value OR u.currency <> latest.currency))`
	var out []string
	if s.pg {
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
			SELECT u.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::text[], $9::text[], $10::text[], $11::json[], $12::text[], $13::timestamptz[], $14::float8[],
				$15::text[], $16::json[], $17::bool[], $18::text[], $19::text[], $20::text[], $21::int4[],
				$22::timestamptz[], $23::text[], $24::bool[], $25::timestamptz[], $26::timestamptz[])
				AS u(`+insertCols+`)
			WHERE `+fmt.Sprintf(changes, "IS DISTINCT FROM")+`
			ON CONFLICT (key) DO NOTHING RETURNING key`,
			key, kind, retracts, dest, plat, rule, mver, src, otype, oid, subj, cname, occ, value, cur, ident,
			withID, state, reason, detail, attempts, next, ref, replay, crt, upd)
		if err != nil {
			return nil, err
		}
		got, err := collect(r, func(r rows) (string, error) { var k string; return k, r.Scan(&k) })
		if err != nil {
			return nil, err
		}
		inserted := make(map[string]bool, len(got))
		for _, k := range got {
			inserted[k] = true
		}
		for _, a := range batch { // batch order
			if inserted[a.c.Key] {
				out = append(out, a.c.Key)
			}
		}
		return out, nil
	}
	// SQLite: one statement per candidate.
	stmt := `INSERT INTO conversions (` + insertCols + `)
		SELECT * FROM (SELECT ` + aliased(insertCols) + `) AS u
		WHERE ` + fmt.Sprintf(changes, "IS NOT") + `
		ON CONFLICT (key) DO NOTHING`
	for _, a := range batch {
		c := a.c
		n, err := q.exec(ctx, stmt, c.Key, c.Kind, c.RetractsKey, c.Destination, c.Platform, c.Rule, c.MappingVersion,
			c.Source, c.ObjectType, c.ObjectID, a.subjects, c.ConversionName, s.ts(c.OccurredAt), *c.Value, c.Currency,
			a.identity, a.withID, string(c.State), c.Reason, c.Detail, c.Attempts, s.ts(c.NextAttemptAt), c.PlatformRef,
			c.Replay, s.ts(c.CreatedAt), s.ts(c.UpdatedAt))
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out = append(out, c.Key)
		}
	}
	return out, nil
}

// aliased is "$1 AS col1, $2 AS col2, ..." for a comma-separated column list.
func aliased(colList string) string {
	var b []byte
	i := 0
	for _, part := range splitCols(colList) {
		i++
		if i > 1 {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "$%d AS %s", i, part)
	}
	return string(b)
}

func splitCols(colList string) []string {
	var out []string
	cur := []byte{}
	for i := 0; i < len(colList); i++ {
		switch ch := colList[i]; ch {
		case ',':
			out = append(out, string(cur))
			cur = cur[:0]
		case ' ', '\t', '\n':
		default:
			cur = append(cur, ch)
		}
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

// AdjustedConversions returns, in one query, the stored conversions with keys (the
// RetractsKey of adjustments being sent) and every adjustment of them (rows whose
// RetractsKey is one of keys), oldest occurred_at first.
func (s *Store) AdjustedConversions(ctx context.Context, keys []string) ([]Conversion, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	return s.listQuery(ctx, "adjusted conversions", `SELECT `+cols("")+` FROM conversions
		WHERE `+s.in("key", 1)+` OR (retracts_key <> '' AND `+s.in("retracts_key", 1)+`)
		ORDER BY occurred_at, key`, s.list(keys))
}
