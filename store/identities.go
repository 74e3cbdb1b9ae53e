package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/closedloop/closedloop/internal/pii"
)

// UpsertResult counts what UpsertIdentities did, per capture: Inserted (first capture of
// its subject), Merged (changed a stored identity) or Unchanged (changed nothing).
type UpsertResult struct{ Inserted, Merged, Unchanged int }

func (r *UpsertResult) add(o UpsertResult) {
	r.Inserted += o.Inserted
	r.Merged += o.Merged
	r.Unchanged += o.Unchanged
}

// UpsertIdentities merges caps into the stored identities in one transaction, by the rules
// documented on IdentityCapture. It is idempotent: upserting a capture again reports it
// Unchanged and writes nothing (UpdatedAt included). Captures may arrive in any order: each
// identifier field, ip, user agent, lead id and consent keeps the value of the latest
// CapturedAt seen, whatever the arrival order; on equal times the later call wins. Times
// are kept to the microsecond. A capture without SubjectKey or CapturedAt is refused
// (InvalidError) and nothing is written.
func (s *Store) UpsertIdentities(ctx context.Context, caps []IdentityCapture) (UpsertResult, error) {
	if len(caps) == 0 {
		return UpsertResult{}, nil
	}
	var res UpsertResult
	err := s.db.inTx(ctx, func(q querier) error {
		var err error
		res, err = s.upsertIdentities(ctx, q, caps, "identities")
		return err
	})
	if err != nil {
		return UpsertResult{}, err
	}
	return res, nil
}

// LookupIdentities returns the stored identity of each subject key that has one, in one
// query. Subjects never captured are absent from the map.
func (s *Store) LookupIdentities(ctx context.Context, subjectKeys []string) (map[string]Identity, error) {
	out := map[string]Identity{}
	if len(subjectKeys) == 0 {
		return out, nil
	}
	states, err := s.loadIdentities(ctx, s.db, subjectKeys, false)
	if err != nil {
		return nil, err
	}
	for k, st := range states {
		out[k] = st.id
	}
	return out, nil
}

// identityState is one subject's stored identity while captures merge into it.
type identityState struct {
	id     Identity
	stamps map[string]time.Time // identifier field or @scalar -> capture time of its value
	exists bool                 // a row is stored
	dirty  bool                 // the identities row must be written
	clicks map[clickKey]bool    // clicks to write (new or moved earlier)
}

type clickKey struct{ typ, id string }

const (
	stampIP        = "@ip"
	stampUserAgent = "@user_agent"
	stampLeadID    = "@lead_id"
)

func newIdentityState(key string) *identityState {
	return &identityState{id: Identity{SubjectKey: key}, stamps: map[string]time.Time{}, clicks: map[clickKey]bool{}}
}

// apply merges one capture and reports whether anything changed.
func (st *identityState) apply(c IdentityCapture) bool {
	at := utcMicro(c.CapturedAt)
	changed := false
	for _, click := range c.Clicks {
		if click.Type == "" || click.ID == "" {
			continue
		}
		cat := utcMicro(click.At)
		i := slices.IndexFunc(st.id.Clicks, func(h Click) bool { return h.Type == click.Type && h.ID == click.ID })
		switch {
		case i < 0:
			st.id.Clicks = append(st.id.Clicks, Click{Type: click.Type, ID: click.ID, At: cat})
		case !cat.IsZero() && (st.id.Clicks[i].At.IsZero() || cat.Before(st.id.Clicks[i].At)):
			st.id.Clicks[i].At = cat
		default:
			continue
		}
		st.clicks[clickKey{click.Type, click.ID}] = true
		changed = true
	}

	// Identifiers merge per field ("email" covers "email" and "email/google"): every key
	// of the field from the latest capture having it.
	keys := slices.Sorted(maps.Keys(c.Identifiers))
	for lo := 0; lo < len(keys); {
		field := identifierField(keys[lo])
		hi := lo + 1
		for hi < len(keys) && identifierField(keys[hi]) == field {
			hi++
		}
		if st.mergeField(field, keys[lo:hi], c.Identifiers, at) {
			changed = true
		}
		lo = hi
	}

	for _, sc := range []struct {
		stamp string
		val   string
		dst   *string
	}{{stampIP, c.IP, &st.id.IP}, {stampUserAgent, c.UserAgent, &st.id.UserAgent}, {stampLeadID, c.LeadID, &st.id.LeadID}} {
		if sc.val == "" {
			continue
		}
		if prev, ok := st.stamps[sc.stamp]; ok && at.Before(prev) {
			continue
		}
		if *sc.dst == sc.val && st.stamps[sc.stamp].Equal(at) {
			continue
		}
		*sc.dst = sc.val
		st.stamps[sc.stamp] = at
		changed = true
	}

	if consent := c.Consent; consent.AdUserData != "" || consent.AdPersonalization != "" {
		consent.CapturedAt = utcMicro(consent.CapturedAt)
		if consent.CapturedAt.IsZero() {
			consent.CapturedAt = at
		}
		if (st.id.Consent == Consent{}) || !consent.CapturedAt.Before(st.id.Consent.CapturedAt) {
			if !consentEqual(consent, st.id.Consent) {
				st.id.Consent = consent
				changed = true
			}
		}
	}

	if at.After(st.id.UpdatedAt) {
		st.id.UpdatedAt = at
		changed = true
	}
	if changed {
		st.dirty = true
	}
	return changed
}

// identifierField is the field of an identifier key: "email" for "email/google".
func identifierField(key string) string {
	field, _, _ := strings.Cut(key, "/")
	return field
}

// mergeField replaces the stored keys of field with keys (sorted, all of field) from
// values, captured at, unless the stored ones were captured later or are the same. It
// reports whether anything changed. Empty values are absent.
func (st *identityState) mergeField(field string, keys []string, values pii.Set, at time.Time) bool {
	present := 0
	for _, k := range keys {
		if values[k] != "" {
			present++
		}
	}
	if present == 0 {
		return false
	}
	prev, ok := st.stamps[field]
	if ok && at.Before(prev) {
		return false
	}
	stored := 0
	same := true
	for k, v := range st.id.Identifiers {
		if identifierField(k) == field {
			stored++
			if values[k] != v {
				same = false
			}
		}
	}
	if same && stored == present && prev.Equal(at) {
		return false
	}
	if st.id.Identifiers == nil {
		st.id.Identifiers = make(pii.Set, len(keys))
	}
	for k := range st.id.Identifiers {
		if identifierField(k) == field {
			delete(st.id.Identifiers, k)
		}
	}
	for _, k := range keys {
		if v := values[k]; v != "" {
			st.id.Identifiers[k] = v
		}
	}
	st.stamps[field] = at
	return true
}

func consentEqual(a, b Consent) bool {
	return a.AdUserData == b.AdUserData && a.AdPersonalization == b.AdPersonalization && a.CapturedAt.Equal(b.CapturedAt)
}

// upsertIdentities merges caps inside transaction q. field names the caps in errors.
func (s *Store) upsertIdentities(ctx context.Context, q querier, caps []IdentityCapture, field string) (UpsertResult, error) {
	var res UpsertResult
	if len(caps) == 0 {
		return res, nil
	}
	keys := make([]string, 0, len(caps))
	seen := map[string]bool{}
	for i, c := range caps {
		if c.SubjectKey == "" {
			return res, invalid(fmt.Sprintf("%s[%d].subject_key", field, i), "required")
		}
		if c.CapturedAt.IsZero() {
			return res, invalid(fmt.Sprintf("%s[%d].captured_at", field, i), "required")
		}
		if !seen[c.SubjectKey] {
			seen[c.SubjectKey] = true
			keys = append(keys, c.SubjectKey)
		}
	}
	sort.Strings(keys)
	if s.pg {
		// Serialize writers of the same subjects (rows that do not exist yet cannot be
		// locked with FOR UPDATE). Every transaction takes its lock ids in ascending order,
		// so two writers never wait on each other in a cycle, hash collisions included.
		if _, err := q.exec(ctx, `SELECT pg_advisory_xact_lock(h) FROM (
				SELECT DISTINCT hashtextextended(k, 7238) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS ids`,
			keys); err != nil {
			return res, fmt.Errorf("store: lock identities: %w", err)
		}
	}
	states, err := s.loadIdentities(ctx, q, keys, true)
	if err != nil {
		return res, err
	}
	for _, c := range caps {
		st := states[c.SubjectKey]
		if st == nil {
			st = newIdentityState(c.SubjectKey)
			states[c.SubjectKey] = st
		}
		fresh := !st.exists && !st.dirty
		changed := st.apply(c)
		switch {
		case fresh:
			st.dirty = true
			res.Inserted++
		case changed:
			res.Merged++
		default:
			res.Unchanged++
		}
	}
	var dirty []*identityState
	for _, k := range keys {
		if st := states[k]; st.dirty {
			dirty = append(dirty, st)
		}
	}
	if err := s.writeIdentities(ctx, q, dirty); err != nil {
		return res, fmt.Errorf("store: write identities: %w", err)
	}
	return res, nil
}

// identityQuery selects the identities of a list of subject keys: the identities columns
// loadIdentities reads (stamps only when withStamps, else NULL), then the clicks: on
// PostgreSQL as three arrays (types, ids, microseconds or NULL), on SQLite as a JSON array
// of [type, id, microseconds or null].
//
// On PostgreSQL each key is looked up on its own through the primary key (a LATERAL
// subquery with LIMIT 1 is never flattened into a hash join): the plan is the same
// whatever the statistics say, and costs keys × one index probe. `subject_key = ANY($1)`
// let the planner pick a sequential scan while its statistics still described a small
// table, and each lookup then cost rows × keys (100 ms and more per 1,000-message batch
// after 50,000 identities).
func (s *Store) identityQuery(withStamps bool) string {
	stamps := "i.stamps"
	if !withStamps {
		stamps = "NULL"
	}
	if s.pg {
		return `SELECT i.subject_key, i.identifiers, ` + stamps + `, i.ip, i.user_agent, i.lead_id,
			i.consent_ad_user_data, i.consent_ad_personalization, i.consent_captured_at, i.updated_at,
			c.types, c.ids, c.ats
			FROM (SELECT DISTINCT k FROM unnest($1::text[]) AS k) AS ks
			CROSS JOIN LATERAL (SELECT * FROM identities WHERE subject_key = ks.k LIMIT 1) AS i
			CROSS JOIN LATERAL (SELECT array_agg(type) AS types, array_agg(id) AS ids,
				array_agg((extract(epoch FROM clicked_at) * 1000000)::bigint) AS ats
				FROM clicks WHERE subject_key = i.subject_key) AS c`
	}
	return `SELECT i.subject_key, i.identifiers, ` + stamps + `, i.ip, i.user_agent, i.lead_id,
		i.consent_ad_user_data, i.consent_ad_personalization, i.consent_captured_at, i.updated_at,
		(SELECT json_group_array(json_array(c.type, c.id, c.clicked_at)) FROM clicks c WHERE c.subject_key = i.subject_key)
		FROM identities i WHERE ` + s.in("i.subject_key", 1)
}

// loadIdentities reads the stored identities of keys. The stamps are read only when
// withStamps (a merge needs them, a lookup does not).
func (s *Store) loadIdentities(ctx context.Context, q querier, keys []string, withStamps bool) (map[string]*identityState, error) {
	r, err := q.query(ctx, s.identityQuery(withStamps), s.list(keys))
	if err != nil {
		return nil, fmt.Errorf("store: read identities: %w", err)
	}
	out := make(map[string]*identityState, len(keys))
	_, err = collect(r, func(r rows) (struct{}, error) {
		var (
			key, idents, stamps, clicks string
			types, ids                  []string
			ats                         []*int64
			st                          = &identityState{exists: true, clicks: map[clickKey]bool{}}
		)
		dest := []any{&key, textScan{&idents}, textScan{&stamps}, &st.id.IP, &st.id.UserAgent, &st.id.LeadID,
			&st.id.Consent.AdUserData, &st.id.Consent.AdPersonalization, tsScan{&st.id.Consent.CapturedAt},
			tsScan{&st.id.UpdatedAt}}
		if s.pg {
			dest = append(dest, &types, &ids, &ats)
		} else {
			dest = append(dest, textScan{&clicks})
		}
		if err := r.Scan(dest...); err != nil {
			return struct{}{}, err
		}
		st.id.SubjectKey = key
		var err error
		if st.id.Identifiers, err = decodeStringMap(idents); err != nil {
			return struct{}{}, fmt.Errorf("identifiers of a stored identity: %w", err)
		}
		if len(st.id.Identifiers) == 0 {
			st.id.Identifiers = nil
		}
		st.stamps = map[string]time.Time{}
		if stamps != "" {
			if err := json.Unmarshal([]byte(stamps), &st.stamps); err != nil {
				return struct{}{}, fmt.Errorf("stamps of a stored identity: %w", err)
			}
			if st.stamps == nil {
				st.stamps = map[string]time.Time{}
			}
		}
		if s.pg {
			if len(ids) != len(types) || len(ats) != len(types) {
				return struct{}{}, fmt.Errorf("clicks of a stored identity: %d types, %d ids, %d times", len(types), len(ids), len(ats))
			}
			if len(types) > 0 {
				st.id.Clicks = make([]Click, len(types))
				for i := range types {
					st.id.Clicks[i] = Click{Type: types[i], ID: ids[i]}
					if ats[i] != nil {
						st.id.Clicks[i].At = time.UnixMicro(*ats[i]).UTC()
					}
				}
				sortClicks(st.id.Clicks)
			}
		} else if st.id.Clicks, err = decodeClicks(clicks); err != nil {
			return struct{}{}, err
		}
		out[key] = st
		return struct{}{}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read identities: %w", err)
	}
	return out, nil
}

// decodeStringMap reads a JSON object of strings, as json.Marshal writes a pii.Set. The
// common case (compact, no escapes) is read directly; anything else goes to
// encoding/json, with the same result.
func decodeStringMap(raw string) (pii.Set, error) {
	if raw == "" {
		return nil, nil
	}
	if m, ok := decodeFlatStringMap(raw); ok {
		return m, nil
	}
	var m pii.Set
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeFlatStringMap reads `{"k":"v",...}` without whitespace, escapes or bytes outside
// printable ASCII; ok is false for anything else.
func decodeFlatStringMap(raw string) (pii.Set, bool) {
	if len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' {
		return nil, false
	}
	m := pii.Set{}
	rest := raw[1 : len(raw)-1]
	str := func() (string, bool) {
		if len(rest) < 2 || rest[0] != '"' {
			return "", false
		}
		for i := 1; i < len(rest); i++ {
			switch c := rest[i]; {
			case c == '"':
				v := rest[1:i]
				rest = rest[i+1:]
				return v, true
			case c == '\\' || c < 0x20 || c > 0x7e:
				return "", false
			}
		}
		return "", false
	}
	for len(rest) > 0 {
		k, ok := str()
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return nil, false
		}
		rest = rest[1:]
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v
		if len(rest) > 0 {
			if rest[0] != ',' || len(rest) == 1 {
				return nil, false
			}
			rest = rest[1:]
		}
	}
	return m, true
}

// decodeClicks reads [[type, id, micros|null], ...], sorted by type, time and id.
func decodeClicks(raw string) ([]Click, error) {
	if raw == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.UseNumber()
	var arr [][]any
	if err := dec.Decode(&arr); err != nil {
		return nil, fmt.Errorf("clicks of a stored identity: %w", err)
	}
	var out []Click
	for _, a := range arr {
		if len(a) != 3 {
			return nil, fmt.Errorf("clicks of a stored identity: %d elements, want 3", len(a))
		}
		c := Click{}
		c.Type, _ = a[0].(string)
		c.ID, _ = a[1].(string)
		if n, ok := a[2].(json.Number); ok {
			us, err := n.Int64()
			if err != nil {
				return nil, fmt.Errorf("clicks of a stored identity: time: %w", err)
			}
			c.At = time.UnixMicro(us).UTC()
		}
		out = append(out, c)
	}
	sortClicks(out)
	return out, nil
}

func sortClicks(cs []Click) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Type != cs[j].Type {
			return cs[i].Type < cs[j].Type
		}
		if !cs[i].At.Equal(cs[j].At) {
			return cs[i].At.Before(cs[j].At)
		}
		return cs[i].ID < cs[j].ID
	})
}

// writeIdentities stores the dirty identities and their new or changed clicks. On
// PostgreSQL the identities not stored yet (and so all their clicks) are copied in with
// COPY, the rest upserted: the caller holds the advisory locks of every key, so no other
// writer can store one of those subjects meanwhile.
func (s *Store) writeIdentities(ctx context.Context, q querier, dirty []*identityState) error {
	if len(dirty) == 0 {
		return nil
	}
	var fresh, stored identityRows
	for _, st := range dirty {
		rows := &stored
		if s.pg && !st.exists {
			rows = &fresh
		}
		if err := rows.add(s, st); err != nil {
			return err
		}
		st.exists, st.dirty, st.clicks = true, false, map[clickKey]bool{}
	}
	if s.pg {
		if err := fresh.copy(ctx, q); err != nil {
			return err
		}
		return stored.upsertPostgres(ctx, q)
	}
	return stored.upsertSQLite(ctx, q)
}

// identityRows are identities rows and clicks rows about to be written, column by column.
type identityRows struct {
	keys, idents, stamps, ips, uas, leads, cud, cpz []string
	cat, upd                                        []any
	clickKeys, clickTypes, clickIDs                 []string
	clickAts                                        []any
	buf                                             []byte
}

// add appends st's identities row and its clicks to write.
func (r *identityRows) add(s *Store, st *identityState) error {
	sortClicks(st.id.Clicks)
	for _, c := range st.id.Clicks {
		if st.clicks[clickKey{c.Type, c.ID}] {
			r.clickKeys = append(r.clickKeys, st.id.SubjectKey)
			r.clickTypes = append(r.clickTypes, c.Type)
			r.clickIDs = append(r.clickIDs, c.ID)
			r.clickAts = append(r.clickAts, s.ts(c.At))
		}
	}
	r.buf = appendStringMapJSON(r.buf[:0], st.id.Identifiers)
	ident := string(r.buf)
	var err error
	if r.buf, err = appendStampsJSON(r.buf[:0], st.stamps); err != nil {
		return err
	}
	r.keys = append(r.keys, st.id.SubjectKey)
	r.idents = append(r.idents, ident)
	r.stamps = append(r.stamps, string(r.buf))
	r.ips = append(r.ips, st.id.IP)
	r.uas = append(r.uas, st.id.UserAgent)
	r.leads = append(r.leads, st.id.LeadID)
	r.cud = append(r.cud, st.id.Consent.AdUserData)
	r.cpz = append(r.cpz, st.id.Consent.AdPersonalization)
	r.cat = append(r.cat, s.ts(st.id.Consent.CapturedAt))
	r.upd = append(r.upd, s.ts(st.id.UpdatedAt))
	return nil
}

var (
	identityCols = []string{"subject_key", "identifiers", "stamps", "ip", "user_agent", "lead_id",
		"consent_ad_user_data", "consent_ad_personalization", "consent_captured_at", "updated_at"}
	clickCols = []string{"subject_key", "type", "id", "clicked_at"}
)

// copy inserts the rows with COPY (PostgreSQL only; none of them may exist yet).
func (r *identityRows) copy(ctx context.Context, q querier) error {
	if len(r.keys) == 0 {
		return nil
	}
	c, ok := q.(copier)
	if !ok {
		return fmt.Errorf("store: %T cannot COPY", q)
	}
	rows := make([][]any, len(r.keys))
	for i := range r.keys {
		rows[i] = []any{r.keys[i], r.idents[i], r.stamps[i], r.ips[i], r.uas[i], r.leads[i], r.cud[i], r.cpz[i], r.cat[i], r.upd[i]}
	}
	if _, err := c.copyFrom(ctx, "identities", identityCols, rows); err != nil {
		return err
	}
	if len(r.clickKeys) == 0 {
		return nil
	}
	rows = make([][]any, len(r.clickKeys))
	for i := range r.clickKeys {
		rows[i] = []any{r.clickKeys[i], r.clickTypes[i], r.clickIDs[i], r.clickAts[i]}
	}
	_, err := c.copyFrom(ctx, "clicks", clickCols, rows)
	return err
}

const (
	upsertIdentity = `
		ON CONFLICT (subject_key) DO UPDATE SET identifiers = excluded.identifiers, stamps = excluded.stamps,
			ip = excluded.ip, user_agent = excluded.user_agent, lead_id = excluded.lead_id,
			consent_ad_user_data = excluded.consent_ad_user_data,
			consent_ad_personalization = excluded.consent_ad_personalization,
			consent_captured_at = excluded.consent_captured_at, updated_at = excluded.updated_at`
	upsertClick = ` ON CONFLICT (subject_key, type, id) DO UPDATE SET clicked_at = excluded.clicked_at`
)

// upsertPostgres inserts or updates the rows, one statement per table.
func (r *identityRows) upsertPostgres(ctx context.Context, q querier) error {
	if len(r.keys) == 0 {
		return nil
	}
	if _, err := q.exec(ctx, `INSERT INTO identities (`+strings.Join(identityCols, ", ")+`)
		SELECT * FROM unnest($1::text[], $2::json[], $3::json[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])`+upsertIdentity,
		r.keys, r.idents, r.stamps, r.ips, r.uas, r.leads, r.cud, r.cpz, pgTimes(r.cat), pgTimes(r.upd)); err != nil {
		return err
	}
	if len(r.clickKeys) == 0 {
		return nil
	}
	_, err := q.exec(ctx, `INSERT INTO clicks (`+strings.Join(clickCols, ", ")+`)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])`+upsertClick,
		r.clickKeys, r.clickTypes, r.clickIDs, pgTimes(r.clickAts))
	return err
}

// upsertSQLite inserts or updates the rows one by one (SQLite statements are cheap
// in-process calls).
func (r *identityRows) upsertSQLite(ctx context.Context, q querier) error {
	for i := range r.keys {
		if _, err := q.exec(ctx, `INSERT INTO identities (`+strings.Join(identityCols, ", ")+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`+upsertIdentity,
			r.keys[i], r.idents[i], r.stamps[i], r.ips[i], r.uas[i], r.leads[i], r.cud[i], r.cpz[i], r.cat[i], r.upd[i]); err != nil {
			return err
		}
	}
	for i := range r.clickKeys {
		if _, err := q.exec(ctx, `INSERT INTO clicks (`+strings.Join(clickCols, ", ")+`) VALUES ($1, $2, $3, $4)`+upsertClick,
			r.clickKeys[i], r.clickTypes[i], r.clickIDs[i], r.clickAts[i]); err != nil {
			return err
		}
	}
	return nil
}

// pgTimes turns s.ts values into a timestamptz[] argument with NULLs.
func pgTimes(v []any) []*time.Time {
	out := make([]*time.Time, len(v))
	for i, x := range v {
		if t, ok := x.(time.Time); ok {
			out[i] = &t
		}
	}
	return out
}
