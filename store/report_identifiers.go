package store

import (
	"context"
	"fmt"
	"time"
)

// IdentifierCount says, for the conversions created on one UTC day (by CreatedAt, as
// ReportCount) per destination, platform and conversion name, how many carry each kind of
// identifier in the identity snapshot their upload is built from. A conversion may carry
// several kinds, or none (awaiting identity, unmatched).
type IdentifierCount struct {
	Day            time.Time // UTC midnight
	Destination    string
	Platform       string
	ConversionName string
	Count          int // conversions created
	WithClickID    int // any click id (gclid, fbc, ttclid, ...)
	WithEmail      int // a hashed email
	WithPhone      int // a hashed phone
	WithLeadID     int // a Meta Lead Ads lead id
}

// identifierKinds are SQL conditions on the identity column, per dialect: click id, email,
// phone, lead id (the keys of pii.Set and Identity's JSON).
func (s *Store) identifierKinds() [4]string {
	if s.pg {
		return [4]string{
			`json_typeof(identity->'clicks') = 'array' AND json_array_length(identity->'clicks') > 0`,
			`identity->'identifiers'->>'email' IS NOT NULL`,
			`(identity->'identifiers'->>'phone/e164' IS NOT NULL OR identity->'identifiers'->>'phone/digits' IS NOT NULL)`,
			`coalesce(identity->>'lead_id', '') <> ''`,
		}
	}
	return [4]string{
		`coalesce(json_array_length(identity, '$.clicks'), 0) > 0`,
		`json_extract(identity, '$.identifiers.email') IS NOT NULL`,
		`(json_extract(identity, '$.identifiers."phone/e164"') IS NOT NULL OR json_extract(identity, '$.identifiers."phone/digits"') IS NOT NULL)`,
		`coalesce(json_extract(identity, '$.lead_id'), '') <> ''`,
	}
}

// IdentifierCounts counts the identifier kinds of the conversions created in [since,
// until), grouped as IdentifierCount says, ordered by day, destination and conversion
// name.
func (s *Store) IdentifierCounts(ctx context.Context, since, until time.Time) ([]IdentifierCount, error) {
	day := s.trunc("created_at", "day")
	k := s.identifierKinds()
	sum := func(cond string) string { return "sum(CASE WHEN " + cond + " THEN 1 ELSE 0 END)" }
	r, err := s.db.query(ctx, `SELECT `+day+`, destination, platform, conversion_name, count(*), `+
		sum(k[0])+`, `+sum(k[1])+`, `+sum(k[2])+`, `+sum(k[3])+`
		FROM conversions WHERE created_at >= $1 AND created_at < $2
		GROUP BY `+day+`, destination, platform, conversion_name
		ORDER BY 1, destination, conversion_name, platform`, s.ts(since), s.ts(until))
	if err != nil {
		return nil, fmt.Errorf("store: identifier counts: %w", err)
	}
	out, err := collect(r, func(r rows) (IdentifierCount, error) {
		var c IdentifierCount
		return c, r.Scan(tsScan{&c.Day}, &c.Destination, &c.Platform, &c.ConversionName, intScan{&c.Count},
			intScan{&c.WithClickID}, intScan{&c.WithEmail}, intScan{&c.WithPhone}, intScan{&c.WithLeadID})
	})
	if err != nil {
		return nil, fmt.Errorf("store: identifier counts: %w", err)
	}
	return out, nil
}
