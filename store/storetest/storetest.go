// Package storetest is the one conformance suite every store dialect passes. Behaviour
// changes start here: change the case, then both dialects.
//
//	func TestSQLite(t *testing.T) { storetest.Run(t, openSQLite) }
//
// open must return a new, migrated, empty store for each call (a fresh PostgreSQL database or
// SQLite file), closed at the test's cleanup; every case calls it once and runs in parallel.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// Opener returns a new, migrated, empty store closed at t's cleanup.
type Opener func(t *testing.T) *store.Store

// Run runs every case against stores from open.
func Run(t *testing.T, open Opener) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"MigrateUpDownUp", testMigrateUpDownUp},
		{"IdentityMergeRules", testIdentityMergeRules},
		{"IdentityOutOfOrder", testIdentityOutOfOrder},
		{"IdentityIdempotent", testIdentityIdempotent},
		{"IdentityClicksKept", testIdentityClicksKept},
		{"IdentityNewAndStoredInOneBatch", testIdentityNewAndStored},
		{"IdentityInvalid", testIdentityInvalid},
		{"IdentityConcurrent", testIdentityConcurrent},
		{"LookupIdentities", testLookupIdentities},
		{"ConversionRoundTrip", testConversionRoundTrip},
		{"WriteBatchIdempotent", testWriteBatchIdempotent},
		{"WriteBatchAtomic", testWriteBatchAtomic},
		{"ExistingKeys", testExistingKeys},
		{"AwaitingUpdateExpire", testAwaitingUpdateExpire},
		{"AwaitingUpdateConcurrent", testAwaitingUpdateConcurrent},
		{"ClaimDue", testClaimDue},
		{"ClaimReplayLimit", testClaimReplayLimit},
		{"ClaimConcurrent", testClaimConcurrent},
		{"RecordOutcomes", testRecordOutcomes},
		{"ReleaseExpiredLeases", testReleaseExpiredLeases},
		{"HeldRows", testHeldRows},
		{"RateBucket", testRateBucket},
		{"SentForPolling", testSentForPolling},
		{"ListAndCount", testListAndCount},
		{"ReportCounts", testReportCounts},
		{"StageCounts", testStageCounts},
		{"StatusPageCounts", testStatusPageCounts},
		{"ClaimEnrichment", testClaimEnrichment},
		{"ClaimEnrichmentConcurrent", testClaimEnrichmentConcurrent},
		{"CompleteEnrichment", testCompleteEnrichment},
		{"FetchCache", testFetchCache},
		{"ConnectionStates", testConnectionStates},
		{"PendingChanges", testPendingChanges},
		{"ConsumedOffsets", testConsumedOffsets},
		{"ConsumedOffsetsInvalid", testConsumedOffsetsInvalid},
		{"ConsumedOffsetsConcurrent", testConsumedOffsetsConcurrent},
		{"IdentifierCounts", testIdentifierCounts},
		{"Restatements", testRestatements},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open)
		})
	}
}

// t0 is the suite's fixed clock origin; at(h) is h hours after it.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// conv returns a ready conversion of destination "google" with every field set.
func conv(key string) store.Conversion {
	v := 120.5
	return store.Conversion{
		Key: key, Kind: store.KindConversion, Destination: "google", Platform: "google", Rule: "won",
		MappingVersion: "v1", Source: "hubspot", ObjectType: "deal", ObjectID: "d-" + key,
		SubjectKeys:    []string{"hubspot:deal:d-" + key, "hubspot:contact:c-" + key},
		ConversionName: "customers/1/conversionActions/2", OccurredAt: at(-48), Value: &v, Currency: "EUR",
		Identity: store.Identity{
			SubjectKey:  "hubspot:deal:d-" + key,
			Clicks:      []store.Click{{Type: "gclid", ID: "g-" + key, At: at(-72)}},
			Identifiers: pii.Set{"email": "aa" + key},
			Consent:     store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentGranted, CapturedAt: at(-72)},
			UpdatedAt:   at(-72),
		},
		State: store.StateReady, NextAttemptAt: at(0), CreatedAt: at(0), UpdatedAt: at(0),
	}
}

func write(t *testing.T, s *store.Store, cs ...store.Conversion) store.BatchResult {
	t.Helper()
	res, err := s.WriteBatch(ctx(t), store.Batch{Conversions: cs})
	require.NoError(t, err)
	return res
}

func get(t *testing.T, s *store.Store, key string) store.Conversion {
	t.Helper()
	c, err := s.Get(ctx(t), key)
	require.NoError(t, err)
	return c
}

func keysOf(cs []store.Conversion) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Key
	}
	return out
}

func testMigrateUpDownUp(t *testing.T, open Opener) {
	s := open(t)
	c := ctx(t)
	v, dirty, err := s.MigrationVersion(c)
	require.NoError(t, err)
	require.False(t, dirty)
	require.NotZero(t, v, "a store from open is migrated")
	migrated := v
	write(t, s, conv("k1"))

	require.NoError(t, s.Migrate(c, "down"))
	v, _, err = s.MigrationVersion(c)
	require.NoError(t, err)
	require.Zero(t, v)
	_, err = s.Get(c, "k1")
	require.Error(t, err, "down drops the tables")
	require.NoError(t, s.Migrate(c, "down"), "nothing to do is success")

	require.NoError(t, s.Migrate(c, "up"))
	require.NoError(t, s.Migrate(c, "up"), "nothing to do is success")
	v2, dirty, err := s.MigrationVersion(c)
	require.NoError(t, err)
	require.False(t, dirty)
	require.Equal(t, migrated, v2)
	_, err = s.Get(c, "k1")
	require.ErrorIs(t, err, store.ErrNotFound, "up again starts empty")
	require.Equal(t, 1, write(t, s, conv("k1")).Created)

	require.Error(t, s.Migrate(c, "sideways"))
}

var (
	granted = store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentGranted}
	denied  = store.Consent{AdUserData: store.ConsentDenied, AdPersonalization: store.ConsentDenied}
)

func lookup(t *testing.T, s *store.Store, key string) store.Identity {
	t.Helper()
	got, err := s.LookupIdentities(ctx(t), []string{key})
	require.NoError(t, err)
	id, ok := got[key]
	require.True(t, ok, "identity %s stored", key)
	return id
}

func testIdentityMergeRules(t *testing.T, open Opener) {
	s := open(t)
	const k = "hubspot:contact:9"
	res, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{
		{SubjectKey: k, CapturedAt: at(1), Consent: granted, IP: "192.0.2.1", LeadID: "123", UserAgent: "ua1",
			Identifiers: pii.Set{"email": "e1", "email/google": "eg1", "phone/e164": "p1", "phone/digits": "pd1"},
			Clicks:      []store.Click{{Type: "gclid", ID: "g1", At: at(1)}, {Type: "fbclid", ID: "f1", At: at(1)}}},
	})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Inserted: 1}, res)

	res, err = s.UpsertIdentities(ctx(t), []store.IdentityCapture{
		{SubjectKey: k, CapturedAt: at(3), Consent: denied,
			Identifiers: pii.Set{"email": "e2"}, UserAgent: "ua2",
			Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(0)}, {Type: "ttclid", ID: "t1"}}},
	})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Merged: 1}, res)

	require.Equal(t, store.Identity{
		SubjectKey: k,
		// Clicks accumulate; the same click keeps its earliest time; a click without a time
		// is kept without one.
		Clicks: []store.Click{{Type: "fbclid", ID: "f1", At: at(1)}, {Type: "gclid", ID: "g1", At: at(0)}, {Type: "ttclid", ID: "t1"}},
		// Per field: every hash of the field from the latest capture having it (the
		// email/google variant is gone with the older email); phone untouched.
		Identifiers: pii.Set{"email": "e2", "phone/e164": "p1", "phone/digits": "pd1"},
		IP:          "192.0.2.1", // latest non-empty: an empty value never clears
		UserAgent:   "ua2",
		LeadID:      "123",
		Consent:     store.Consent{AdUserData: store.ConsentDenied, AdPersonalization: store.ConsentDenied, CapturedAt: at(3)},
		UpdatedAt:   at(3),
	}, lookup(t, s, k))
}

func testIdentityOutOfOrder(t *testing.T, open Opener) {
	caps := []store.IdentityCapture{
		{SubjectKey: "s", CapturedAt: at(1), Consent: granted, IP: "192.0.2.1", UserAgent: "ua1",
			Identifiers: pii.Set{"email": "e1", "email/google": "eg1"}, Clicks: []store.Click{{Type: "gclid", ID: "g", At: at(1)}}},
		{SubjectKey: "s", CapturedAt: at(2), IP: "192.0.2.2", Identifiers: pii.Set{"phone/e164": "p2"}},
		{SubjectKey: "s", CapturedAt: at(3), Consent: store.Consent{AdUserData: store.ConsentDenied, CapturedAt: at(2.5)},
			Identifiers: pii.Set{"email": "e3"}, Clicks: []store.Click{{Type: "gclid", ID: "g", At: at(0.5)}}},
	}
	orders := [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {2, 0, 1}}
	var first store.Identity
	for i, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			s := open(t)
			for _, j := range order { // one call per capture: arrival order differs
				_, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{caps[j]})
				require.NoError(t, err)
			}
			got := lookup(t, s, "s")
			require.Equal(t, pii.Set{"email": "e3", "phone/e164": "p2"}, got.Identifiers)
			require.Equal(t, "192.0.2.2", got.IP)
			require.Equal(t, "ua1", got.UserAgent)
			require.Equal(t, store.Consent{AdUserData: store.ConsentDenied, CapturedAt: at(2.5)}, got.Consent)
			require.Equal(t, []store.Click{{Type: "gclid", ID: "g", At: at(0.5)}}, got.Clicks)
			require.Equal(t, at(3), got.UpdatedAt)
			if i == 0 {
				first = got
			} else {
				require.Equal(t, first, got, "every arrival order merges to the same identity")
			}
		})
	}
}

func testIdentityIdempotent(t *testing.T, open Opener) {
	s := open(t)
	caps := []store.IdentityCapture{
		{SubjectKey: "a", CapturedAt: at(1).Add(123456789 * time.Nanosecond), Consent: granted, IP: "192.0.2.1",
			Identifiers: pii.Set{"email": "e1"}, Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(1)}}},
		{SubjectKey: "b", CapturedAt: at(2), LeadID: "l1"},
	}
	res, err := s.UpsertIdentities(ctx(t), caps)
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Inserted: 2}, res)
	before, err := s.LookupIdentities(ctx(t), []string{"a", "b"})
	require.NoError(t, err)

	res, err = s.UpsertIdentities(ctx(t), caps)
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Unchanged: 2}, res)
	// An older capture that adds nothing new changes nothing either.
	res, err = s.UpsertIdentities(ctx(t), []store.IdentityCapture{{SubjectKey: "a", CapturedAt: at(0), IP: "192.0.2.9",
		Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(2)}}}})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Unchanged: 1}, res)

	after, err := s.LookupIdentities(ctx(t), []string{"a", "b"})
	require.NoError(t, err)
	require.Equal(t, before, after, "nothing changed, UpdatedAt included")
	require.Equal(t, at(1).Add(123456*time.Microsecond), after["a"].UpdatedAt, "times kept to the microsecond")

	// Within one call, a repeated capture counts once as inserted, then unchanged.
	res, err = s.UpsertIdentities(ctx(t), []store.IdentityCapture{{SubjectKey: "c", CapturedAt: at(1), IP: "192.0.2.3"},
		{SubjectKey: "c", CapturedAt: at(1), IP: "192.0.2.3"}, {SubjectKey: "c", CapturedAt: at(2), IP: "192.0.2.4"}})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Inserted: 1, Unchanged: 1, Merged: 1}, res)
}

func testIdentityClicksKept(t *testing.T, open Opener) {
	s := open(t)
	for i := range 5 {
		_, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{{SubjectKey: "s", CapturedAt: at(float64(i)),
			Identifiers: pii.Set{"email": fmt.Sprint("e", i)},
			Clicks:      []store.Click{{Type: "gclid", ID: fmt.Sprint("g", i), At: at(float64(i))}}}})
		require.NoError(t, err)
	}
	_, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{{SubjectKey: "s", CapturedAt: at(9), IP: "192.0.2.1"}})
	require.NoError(t, err)
	got := lookup(t, s, "s")
	require.Len(t, got.Clicks, 5, "no capture removes a click")
	for i, c := range got.Clicks {
		require.Equal(t, store.Click{Type: "gclid", ID: fmt.Sprint("g", i), At: at(float64(i))}, c)
	}
	require.Equal(t, pii.Set{"email": "e4"}, got.Identifiers)
}

// testIdentityNewAndStored merges one batch holding subjects not stored yet (one of them
// twice) and subjects already stored: PostgreSQL copies the new ones in and upserts the
// rest, and both must end as if each capture had been merged on its own.
func testIdentityNewAndStored(t *testing.T, open Opener) {
	s := open(t)
	_, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{
		{SubjectKey: "old", CapturedAt: at(1), IP: "192.0.2.1", Identifiers: pii.Set{"email": "e1"},
			Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(1)}}},
	})
	require.NoError(t, err)
	res, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{
		{SubjectKey: "new", CapturedAt: at(2), Consent: granted, Identifiers: pii.Set{"email": "n1", "email/google": "ng1"},
			Clicks: []store.Click{{Type: "gclid", ID: "g2", At: at(2)}}},
		{SubjectKey: "old", CapturedAt: at(3), Identifiers: pii.Set{"phone/e164": "p1"},
			Clicks: []store.Click{{Type: "gclid", ID: "g1", At: at(0.5)}, {Type: "ttclid", ID: "t1", At: at(3)}}},
		{SubjectKey: "new", CapturedAt: at(4), IP: "192.0.2.4", Clicks: []store.Click{{Type: "fbclid", ID: "f1"}}},
	})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Inserted: 1, Merged: 2}, res)
	require.Equal(t, store.Identity{SubjectKey: "new",
		Clicks:      []store.Click{{Type: "fbclid", ID: "f1"}, {Type: "gclid", ID: "g2", At: at(2)}},
		Identifiers: pii.Set{"email": "n1", "email/google": "ng1"}, IP: "192.0.2.4",
		Consent:   store.Consent{AdUserData: store.ConsentGranted, AdPersonalization: store.ConsentGranted, CapturedAt: at(2)},
		UpdatedAt: at(4)}, lookup(t, s, "new"))
	require.Equal(t, store.Identity{SubjectKey: "old",
		Clicks:      []store.Click{{Type: "gclid", ID: "g1", At: at(0.5)}, {Type: "ttclid", ID: "t1", At: at(3)}},
		Identifiers: pii.Set{"email": "e1", "phone/e164": "p1"}, IP: "192.0.2.1", UpdatedAt: at(3)}, lookup(t, s, "old"))

	// The same batch again changes nothing, new subjects included.
	res, err = s.UpsertIdentities(ctx(t), []store.IdentityCapture{
		{SubjectKey: "new", CapturedAt: at(4), IP: "192.0.2.4", Clicks: []store.Click{{Type: "fbclid", ID: "f1"}}},
		{SubjectKey: "old", CapturedAt: at(3), Identifiers: pii.Set{"phone/e164": "p1"}},
	})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Unchanged: 2}, res)
}

func testIdentityInvalid(t *testing.T, open Opener) {
	s := open(t)
	for name, c := range map[string]store.IdentityCapture{
		"identities[1].subject_key": {CapturedAt: at(1)},
		"identities[1].captured_at": {SubjectKey: "x"},
	} {
		_, err := s.UpsertIdentities(ctx(t), []store.IdentityCapture{{SubjectKey: "ok", CapturedAt: at(1)}, c})
		var inv *store.InvalidError
		require.ErrorAs(t, err, &inv)
		require.Equal(t, name, inv.Field)
	}
	got, err := s.LookupIdentities(ctx(t), []string{"ok", "x"})
	require.NoError(t, err)
	require.Empty(t, got, "nothing written when a capture is invalid")
}

// concurrently runs fn(0) ... fn(n-1) on n goroutines at once and fails t if any failed.
func concurrently(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := fn(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// testIdentityConcurrent merges captures of the same subjects from several goroutines at
// once: no merge may be lost (every click kept, the latest identifiers win) and no call may
// fail (no deadlock between writers locking the same subjects in different orders).
func testIdentityConcurrent(t *testing.T, open Opener) {
	s := open(t)
	const workers, rounds, subjects = 4, 15, 6
	concurrently(t, workers, func(w int) error {
		for r := range rounds {
			var caps []store.IdentityCapture
			for i := range subjects {
				j := (i + w + r) % subjects // each worker visits every subject, in its own order
				if w%2 == 1 {
					j = subjects - 1 - j
				}
				n := r*workers + w // distinct, increasing capture time per (round, worker)
				caps = append(caps, store.IdentityCapture{
					SubjectKey: fmt.Sprint("s", j), CapturedAt: at(float64(n)),
					Identifiers: pii.Set{"email": fmt.Sprint("e", n)},
					Clicks:      []store.Click{{Type: "gclid", ID: fmt.Sprintf("w%d-r%d", w, r), At: at(float64(n))}},
				})
			}
			if _, err := s.UpsertIdentities(context.Background(), caps); err != nil {
				return err
			}
		}
		return nil
	})
	last := (rounds-1)*workers + workers - 1
	for i := range subjects {
		id := lookup(t, s, fmt.Sprint("s", i))
		require.Len(t, id.Clicks, workers*rounds, "no click lost")
		require.Equal(t, pii.Set{"email": fmt.Sprint("e", last)}, id.Identifiers, "the latest capture's email wins")
		require.Equal(t, at(float64(last)), id.UpdatedAt)
	}
}

func testLookupIdentities(t *testing.T, open Opener) {
	s := open(t)
	var caps []store.IdentityCapture
	var keys []string
	for i := range 300 {
		k := fmt.Sprint("hubspot:contact:", i)
		keys = append(keys, k)
		if i%3 == 0 {
			continue // never captured
		}
		caps = append(caps, store.IdentityCapture{SubjectKey: k, CapturedAt: at(1), Identifiers: pii.Set{"email": fmt.Sprint("h", i)},
			Clicks: []store.Click{{Type: "gclid", ID: fmt.Sprint("g", i), At: at(0)}, {Type: "fbclid", ID: fmt.Sprint("f", i), At: at(0)}}})
	}
	_, err := s.UpsertIdentities(ctx(t), caps)
	require.NoError(t, err)
	got, err := s.LookupIdentities(ctx(t), keys)
	require.NoError(t, err)
	require.Len(t, got, 200)
	for i, k := range keys {
		id, ok := got[k]
		if i%3 == 0 {
			require.False(t, ok)
			continue
		}
		require.Equal(t, k, id.SubjectKey)
		require.Equal(t, pii.Set{"email": fmt.Sprint("h", i)}, id.Identifiers)
		require.Len(t, id.Clicks, 2)
	}
	empty, err := s.LookupIdentities(ctx(t), nil)
	require.NoError(t, err)
	require.Empty(t, empty)
}

func testConversionRoundTrip(t *testing.T, open Opener) {
	s := open(t)
	full := conv("full")
	full.Kind, full.RetractsKey, full.Detail, full.Reason = store.KindRetraction, "orig", "d", "r"
	full.Replay, full.PlatformRef, full.Attempts = true, "ref", 2
	full.OccurredAt = full.OccurredAt.Add(987654321 * time.Nanosecond)
	bare := store.Conversion{Key: "bare", Destination: "meta", OccurredAt: at(1), State: store.StateAwaitingIdentity}
	write(t, s, full, bare)

	want := full
	want.OccurredAt = full.OccurredAt.Truncate(time.Microsecond)
	require.Equal(t, want, get(t, s, "full"))

	got := get(t, s, "bare")
	require.Equal(t, store.KindConversion, got.Kind, "kind defaults to conversion")
	require.Nil(t, got.Value)
	require.Empty(t, got.SubjectKeys)
	require.False(t, got.CreatedAt.IsZero(), "created at defaults to the clock")
	require.Equal(t, got.CreatedAt, got.NextAttemptAt)
	require.Equal(t, got.CreatedAt, got.UpdatedAt)

	_, err := s.Get(ctx(t), "nope")
	require.ErrorIs(t, err, store.ErrNotFound)

	for field, c := range map[string]store.Conversion{
		"conversions[0].key":         {Destination: "g", OccurredAt: at(0), State: store.StateReady},
		"conversions[0].destination": {Key: "x", OccurredAt: at(0), State: store.StateReady},
		"conversions[0].occurred_at": {Key: "x", Destination: "g", State: store.StateReady},
		"conversions[0].state":       {Key: "x", Destination: "g", OccurredAt: at(0), State: store.StateInFlight},
		"conversions[0].kind":        {Key: "x", Destination: "g", OccurredAt: at(0), State: store.StateReady, Kind: "other"},
	} {
		_, err := s.WriteBatch(ctx(t), store.Batch{Conversions: []store.Conversion{c}})
		var inv *store.InvalidError
		require.ErrorAs(t, err, &inv, field)
		require.Equal(t, field, inv.Field)
	}
}

func testWriteBatchIdempotent(t *testing.T, open Opener) {
	s := open(t)
	a, b, c := conv("a"), conv("b"), conv("c")
	res, err := s.WriteBatch(ctx(t), store.Batch{Conversions: []store.Conversion{a, b, a}})
	require.NoError(t, err)
	require.Equal(t, 2, res.Created)
	require.Equal(t, 1, res.Existing, "a key repeated in a batch counts as existing")
	require.Equal(t, []string{"a", "b"}, res.CreatedKeys)

	changed := b
	changed.State, changed.Value, changed.Reason = store.StateSkipped, nil, "consent_denied"
	res, err = s.WriteBatch(ctx(t), store.Batch{Conversions: []store.Conversion{changed, c}})
	require.NoError(t, err)
	require.Equal(t, store.BatchResult{Created: 1, Existing: 1, CreatedKeys: []string{"c"}}, res)
	require.Equal(t, b, get(t, s, "b"), "an existing row is never changed by a later write")

	res, err = s.WriteBatch(ctx(t), store.Batch{Conversions: []store.Conversion{a, b, c}})
	require.NoError(t, err)
	require.Equal(t, store.BatchResult{Existing: 3}, res)

	res, err = s.WriteBatch(ctx(t), store.Batch{})
	require.NoError(t, err)
	require.Equal(t, store.BatchResult{}, res)
}

func testWriteBatchAtomic(t *testing.T, open Opener) {
	s := open(t)
	_, err := s.WriteBatch(ctx(t), store.Batch{
		Identities:  []store.IdentityCapture{{SubjectKey: "s", CapturedAt: at(0)}},
		Conversions: []store.Conversion{conv("a")},
		StageCounts: []store.StageCount{{Day: at(0), Source: "hubspot", Count: 1}, {Source: "hubspot", Count: 1}},
	})
	var inv *store.InvalidError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "stage_counts[1].day", inv.Field)
	_, err = s.Get(ctx(t), "a")
	require.ErrorIs(t, err, store.ErrNotFound)

	// A failure inside the transaction (an invalid capture is found there) leaves nothing.
	_, err = s.WriteBatch(ctx(t), store.Batch{
		Identities:  []store.IdentityCapture{{SubjectKey: "s", CapturedAt: at(0)}, {SubjectKey: "t"}},
		Conversions: []store.Conversion{conv("a")},
		StageCounts: []store.StageCount{{Day: at(0), Source: "hubspot", Count: 1}},
	})
	require.ErrorAs(t, err, &inv)
	_, err = s.Get(ctx(t), "a")
	require.ErrorIs(t, err, store.ErrNotFound)
	ids, err := s.LookupIdentities(ctx(t), []string{"s"})
	require.NoError(t, err)
	require.Empty(t, ids)
	counts, err := s.StageCounts(ctx(t), at(-24), at(24))
	require.NoError(t, err)
	require.Empty(t, counts)

	res, err := s.WriteBatch(ctx(t), store.Batch{
		Identities:  []store.IdentityCapture{{SubjectKey: "s", CapturedAt: at(0)}},
		Conversions: []store.Conversion{conv("a")},
	})
	require.NoError(t, err)
	require.Equal(t, store.UpsertResult{Inserted: 1}, res.Identities)
	require.Equal(t, 1, res.Created)
}

func testExistingKeys(t *testing.T, open Opener) {
	s := open(t)
	write(t, s, conv("a"), conv("b"))
	got, err := s.ExistingKeys(ctx(t), []string{"a", "b", "c"})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"a": true, "b": true}, got)
	got, err = s.ExistingKeys(ctx(t), nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

func awaiting(key string, subjects ...string) store.Conversion {
	c := conv(key)
	c.State, c.SubjectKeys, c.Identity = store.StateAwaitingIdentity, subjects, store.Identity{}
	return c
}

// testAwaitingUpdateConcurrent updates the same awaiting rows from two goroutines, listed in
// opposite orders (the stage-change and identity pipelines re-join the same conversions
// concurrently): neither call may fail, a deadlock included.
func testAwaitingUpdateConcurrent(t *testing.T, open Opener) {
	s := open(t)
	var rows []store.Conversion
	for i := range 300 {
		rows = append(rows, awaiting(fmt.Sprintf("w%03d", i), fmt.Sprintf("contact:%d", i)))
	}
	write(t, s, rows...)
	reversed := slices.Clone(rows)
	slices.Reverse(reversed)
	lists := [][]store.Conversion{rows, reversed}
	concurrently(t, len(lists), func(g int) error {
		for round := range 15 {
			ups := slices.Clone(lists[g])
			for i := range ups {
				ups[i].Identity = store.Identity{SubjectKey: ups[i].SubjectKeys[0], IP: fmt.Sprintf("192.0.2.%d", g*100+round)}
			}
			if _, err := s.UpdateAwaiting(ctx(t), ups); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.AwaitingForSubjects(ctx(t), []string{"contact:0", "contact:299"})
	require.NoError(t, err)
	require.Len(t, got, 2, "still awaiting, with one of the two snapshots")
}

func testAwaitingUpdateExpire(t *testing.T, open Opener) {
	s := open(t)
	old, young, other := awaiting("old", "deal:1", "contact:1"), awaiting("young", "deal:2", "contact:1"), awaiting("other", "deal:3")
	old.CreatedAt, young.CreatedAt, other.CreatedAt = at(-100), at(-1), at(-50)
	ready := conv("ready") // ready rows are never "awaiting", whatever their subjects
	ready.SubjectKeys = []string{"contact:1"}
	write(t, s, old, young, other, ready)

	got, err := s.AwaitingForSubjects(ctx(t), []string{"contact:1", "nobody"})
	require.NoError(t, err)
	require.Equal(t, []string{"old", "young"}, keysOf(got), "oldest first")
	got, err = s.AwaitingForSubjects(ctx(t), []string{"deal:2"})
	require.NoError(t, err)
	require.Equal(t, []string{"young"}, keysOf(got))

	oldest, ok, err := s.OldestAwaiting(ctx(t))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, at(-100), oldest)

	snap := store.Identity{SubjectKey: "deal:2", Identifiers: pii.Set{"email": "h"}}
	upYoung := young
	upYoung.State, upYoung.Identity, upYoung.NextAttemptAt = store.StateReady, snap, at(5)
	upReady := ready
	upReady.State, upReady.Reason = store.StateSkipped, "consent_denied"
	stillOld := old
	stillOld.Identity = store.Identity{SubjectKey: "deal:1", Clicks: []store.Click{{Type: "gclid", ID: "g"}}}
	n, err := s.UpdateAwaiting(ctx(t), []store.Conversion{upYoung, upReady, stillOld})
	require.NoError(t, err)
	require.Equal(t, 2, n, "the ready row is no longer awaiting and is not touched")
	require.Equal(t, store.StateReady, get(t, s, "ready").State)

	y := get(t, s, "young")
	require.Equal(t, store.StateReady, y.State)
	require.Equal(t, snap, y.Identity)
	require.Equal(t, at(5), y.NextAttemptAt)
	require.Equal(t, stillOld.Identity, get(t, s, "old").Identity, "a row may stay awaiting with a fresher snapshot")

	got, err = s.AwaitingForSubjects(ctx(t), []string{"contact:1", "deal:2"})
	require.NoError(t, err)
	require.Equal(t, []string{"old"}, keysOf(got))

	_, err = s.UpdateAwaiting(ctx(t), []store.Conversion{{Key: "old", State: store.StateSent}})
	var inv *store.InvalidError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "updates[0].state", inv.Field)
	_, err = s.UpdateAwaiting(ctx(t), []store.Conversion{{Key: "old", State: store.StateExpired}})
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "updates[0].reason", inv.Field)

	n, err = s.ExpireAwaiting(ctx(t), at(-10), "no_identifier")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	for _, k := range []string{"old", "other"} {
		c := get(t, s, k)
		require.Equal(t, store.StateUnmatched, c.State)
		require.Equal(t, "no_identifier", c.Reason)
	}
	got, err = s.AwaitingForSubjects(ctx(t), []string{"contact:1", "deal:1", "deal:3"})
	require.NoError(t, err)
	require.Empty(t, got)
	_, ok, err = s.OldestAwaiting(ctx(t))
	require.NoError(t, err)
	require.False(t, ok)
	n, err = s.UpdateAwaiting(ctx(t), []store.Conversion{upYoung})
	require.NoError(t, err)
	require.Zero(t, n)
}

func claim(t *testing.T, s *store.Store, c store.Claim) []store.Conversion {
	t.Helper()
	if c.Owner == "" {
		c.Owner = "w1"
	}
	if c.LeaseFor == 0 {
		c.LeaseFor = time.Minute
	}
	if c.Destination == "" {
		c.Destination = "google"
	}
	rows, err := s.ClaimDue(ctx(t), c)
	require.NoError(t, err)
	return rows
}

func testClaimDue(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i, h := range []float64{3, 1, 2, 0, 9} { // due times; 9 is not due at at(5)
		c := conv(fmt.Sprint("k", i))
		c.NextAttemptAt = at(h)
		cs = append(cs, c)
	}
	meta := conv("meta")
	meta.Destination = "meta"
	waiting := awaiting("waiting", "x")
	write(t, s, append(cs, meta, waiting)...)

	rows := claim(t, s, store.Claim{Limit: 2, Now: at(5), LeaseFor: 90 * time.Second})
	require.Equal(t, []string{"k3", "k1"}, keysOf(rows), "oldest next attempt first")
	for _, r := range rows {
		require.Equal(t, store.StateInFlight, r.State)
		require.Equal(t, "w1", r.LeaseOwner)
		require.Equal(t, at(5).Add(90*time.Second), r.LeaseUntil)
		require.Equal(t, r, get(t, s, r.Key))
	}
	rows = claim(t, s, store.Claim{Limit: 10, Now: at(5), Owner: "w2"})
	require.Equal(t, []string{"k2", "k0"}, keysOf(rows), "leased rows and rows not due are not claimed")
	require.Empty(t, claim(t, s, store.Claim{Limit: 10, Now: at(5)}))
	require.Equal(t, []string{"k4"}, keysOf(claim(t, s, store.Claim{Limit: 10, Now: at(9)})))
	require.Equal(t, []string{"meta"}, keysOf(claim(t, s, store.Claim{Destination: "meta", Limit: 10, Now: at(9)})))
	require.Equal(t, store.StateAwaitingIdentity, get(t, s, "waiting").State)

	for field, c := range map[string]store.Claim{
		"claim.destination": {Owner: "o", Limit: 1, LeaseFor: time.Second},
		"claim.owner":       {Destination: "d", Limit: 1, LeaseFor: time.Second},
		"claim.limit":       {Destination: "d", Owner: "o", LeaseFor: time.Second},
		"claim.lease_for":   {Destination: "d", Owner: "o", Limit: 1},
	} {
		_, err := s.ClaimDue(ctx(t), c)
		var inv *store.InvalidError
		require.ErrorAs(t, err, &inv)
		require.Equal(t, field, inv.Field)
	}
}

func testClaimReplayLimit(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i := range 10 {
		c := conv(fmt.Sprintf("r%02d", i))
		c.Replay = i%2 == 0 // r00, r02, ... are replays, and the oldest of each pair
		c.NextAttemptAt = at(float64(i))
		cs = append(cs, c)
	}
	write(t, s, cs...)
	rows := claim(t, s, store.Claim{Limit: 4, ReplayLimit: 1, Now: at(20)})
	require.Equal(t, []string{"r00", "r01", "r03", "r05"}, keysOf(rows))
	rows = claim(t, s, store.Claim{Limit: 3, Now: at(20)})
	require.Equal(t, []string{"r02", "r04", "r06"}, keysOf(rows), "0 is no cap")
	rows = claim(t, s, store.Claim{Limit: 10, ReplayLimit: 5, Now: at(20)})
	require.Equal(t, []string{"r07", "r08", "r09"}, keysOf(rows))
}

func testClaimConcurrent(t *testing.T, open Opener) {
	s := open(t)
	const n = 400
	var cs []store.Conversion
	for i := range n {
		c := conv(fmt.Sprint("c", i))
		c.NextAttemptAt = at(float64(i%7) / 10)
		c.Replay = i%5 == 0
		cs = append(cs, c)
	}
	write(t, s, cs...)

	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
		errs = make(chan error, 4)
	)
	for w := range 4 {
		owner := fmt.Sprint("w", w)
		wg.Go(func() {
			for {
				rows, err := s.ClaimDue(context.Background(), store.Claim{Destination: "google", Owner: owner,
					Limit: 7, ReplayLimit: 2, LeaseFor: time.Minute, Now: at(1)})
				if err != nil {
					errs <- err
					return
				}
				if len(rows) == 0 {
					return
				}
				mu.Lock()
				for _, r := range rows {
					if prev, dup := seen[r.Key]; dup {
						mu.Unlock()
						errs <- fmt.Errorf("row %s claimed by %s and %s", r.Key, prev, owner)
						return
					}
					if r.LeaseOwner != owner {
						mu.Unlock()
						errs <- fmt.Errorf("row %s returned to %s leased by %s", r.Key, owner, r.LeaseOwner)
						return
					}
					seen[r.Key] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, seen, n, "every row claimed exactly once")
	counts, err := s.CountByState(ctx(t))
	require.NoError(t, err)
	require.Equal(t, map[string]map[store.State]int{"google": {store.StateInFlight: n}}, counts)
}

func testRecordOutcomes(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for _, k := range []string{"acc", "retry", "sent", "rej", "stolen", "final"} {
		cs = append(cs, conv(k))
	}
	write(t, s, cs...)
	// Equal due times: claimed in key order, so w1 gets all but "stolen", which w2 takes.
	rows := claim(t, s, store.Claim{Limit: 5, Now: at(1)})
	require.Equal(t, []string{"acc", "final", "rej", "retry", "sent"}, keysOf(rows))
	const notMine = "stolen"
	require.Equal(t, []string{notMine}, keysOf(claim(t, s, store.Claim{Limit: 5, Now: at(1), Owner: "w2"})))

	outs := []store.Outcome{
		{Key: "acc", State: store.StateAccepted, Reason: "accepted", CountAttempt: true},
		{Key: "retry", State: store.StateReady, Reason: "http_503", Detail: "unavailable", NextAttemptAt: at(2), CountAttempt: true},
		{Key: "sent", State: store.StateSent, PlatformRef: "req-1", CountAttempt: true},
		{Key: "rej", State: store.StateRejected, Reason: "invalid_gclid", Detail: "bad click", CountAttempt: true},
		{Key: "final", State: store.StateReady, Reason: "setup_paused"}, // handed back: no attempt
		{Key: notMine, State: store.StateAccepted, CountAttempt: true},  // leased by w2: ignored
	}
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", outs, at(1.5)))

	changedAt := at(1.5)
	check := func(key string, state store.State, reason string, attempts int) store.Conversion {
		t.Helper()
		c := get(t, s, key)
		require.Equal(t, state, c.State, key)
		require.Equal(t, reason, c.Reason, key)
		require.Equal(t, attempts, c.Attempts, key)
		if state != store.StateInFlight {
			require.Empty(t, c.LeaseOwner, key)
			require.True(t, c.LeaseUntil.IsZero(), key)
			require.Equal(t, changedAt, c.UpdatedAt, key)
		}
		return c
	}
	check("acc", store.StateAccepted, "accepted", 1)
	r := check("retry", store.StateReady, "http_503", 1)
	require.Equal(t, at(2), r.NextAttemptAt)
	require.Equal(t, "unavailable", r.Detail)
	require.Equal(t, "req-1", check("sent", store.StateSent, "", 1).PlatformRef)
	require.Equal(t, "bad click", check("rej", store.StateRejected, "invalid_gclid", 1).Detail)
	require.Equal(t, at(1.5), check("final", store.StateReady, "setup_paused", 0).NextAttemptAt, "zero next attempt = now")
	require.Equal(t, "w2", check(notMine, store.StateInFlight, "", 0).LeaseOwner)

	// The retried row is claimable again once due, and counts its attempts.
	require.Equal(t, []string{"final"}, keysOf(claim(t, s, store.Claim{Limit: 5, Now: at(1.9)})))
	require.Equal(t, []string{"retry"}, keysOf(claim(t, s, store.Claim{Limit: 5, Now: at(2)})))
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", []store.Outcome{{Key: "retry", State: store.StateFailed, Reason: "retries_exhausted", CountAttempt: true}}, at(2)))
	changedAt = at(2)
	check("retry", store.StateFailed, "retries_exhausted", 2)

	// A status poll resolves a sent row (not leased) and keeps its reference.
	require.NoError(t, s.RecordOutcomes(ctx(t), "w3", []store.Outcome{{Key: "sent", State: store.StateAccepted, Reason: "processed"}}, at(3)))
	changedAt = at(3)
	c := check("sent", store.StateAccepted, "processed", 1)
	require.Equal(t, "req-1", c.PlatformRef)
	// An outcome for a final row changes nothing.
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", []store.Outcome{{Key: "acc", State: store.StateRejected, Reason: "late"}}, at(4)))
	changedAt = at(1.5)
	check("acc", store.StateAccepted, "accepted", 1)

	err := s.RecordOutcomes(ctx(t), "w1", []store.Outcome{{Key: "acc", State: store.StateInFlight}}, at(4))
	var inv *store.InvalidError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "outcomes[0].state", inv.Field)
}

func testReleaseExpiredLeases(t *testing.T, open Opener) {
	s := open(t)
	a, b := conv("a"), conv("b")
	a.Attempts, b.NextAttemptAt = 3, at(0.5)
	write(t, s, a, b)
	require.Len(t, claim(t, s, store.Claim{Limit: 1, Now: at(1), LeaseFor: time.Hour}), 1)
	require.Len(t, claim(t, s, store.Claim{Limit: 1, Now: at(1.5), LeaseFor: time.Hour, Owner: "w2"}), 1)

	n, err := s.ReleaseExpiredLeases(ctx(t), at(2))
	require.NoError(t, err)
	require.Zero(t, n, "a lease ending exactly now is not yet over")
	n, err = s.ReleaseExpiredLeases(ctx(t), at(2.1))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got := get(t, s, "a")
	require.Equal(t, store.StateReady, got.State)
	require.Empty(t, got.LeaseOwner)
	require.True(t, got.LeaseUntil.IsZero())
	require.Equal(t, 3, got.Attempts)
	require.Equal(t, at(0), got.NextAttemptAt)
	require.Equal(t, store.StateInFlight, get(t, s, "b").State)

	// The old owner's outcome no longer applies; the new claimer's does.
	require.Len(t, claim(t, s, store.Claim{Limit: 1, Now: at(3), Owner: "w3"}), 1)
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", []store.Outcome{{Key: "a", State: store.StateAccepted, CountAttempt: true}}, at(3)))
	require.Equal(t, store.StateInFlight, get(t, s, "a").State)
	require.NoError(t, s.RecordOutcomes(ctx(t), "w3", []store.Outcome{{Key: "a", State: store.StateAccepted, CountAttempt: true}}, at(3)))
	require.Equal(t, 4, get(t, s, "a").Attempts)
}

func testSentForPolling(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i, ref := range []string{"r1", "", "r2", "r3"} {
		c := conv(fmt.Sprint("s", i))
		c.State, c.PlatformRef, c.UpdatedAt = store.StateSent, ref, at(float64(10-i))
		cs = append(cs, c)
	}
	meta := conv("m")
	meta.Destination, meta.State, meta.PlatformRef = "meta", store.StateSent, "r9"
	write(t, s, append(cs, meta, conv("ready"))...)
	got, err := s.SentForPolling(ctx(t), "google", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"s3", "s2", "s0"}, keysOf(got), "with a reference, least recently changed first")
	got, err = s.SentForPolling(ctx(t), "google", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"s3"}, keysOf(got))
}

func testListAndCount(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i, st := range []store.State{store.StateReady, store.StateReady, store.StateSkipped, store.StateAwaitingIdentity} {
		c := conv(fmt.Sprint("g", i))
		c.State, c.CreatedAt = st, at(float64(-i))
		cs = append(cs, c)
	}
	m := conv("m")
	m.Destination, m.Kind = "meta", store.KindRetraction
	write(t, s, append(cs, m)...)

	all, err := s.ListConversions(ctx(t), store.ListFilter{})
	require.NoError(t, err)
	require.Equal(t, []string{"g3", "g2", "g1", "g0", "m"}, keysOf(all))
	got, err := s.ListConversions(ctx(t), store.ListFilter{Destination: "google", State: store.StateReady, Limit: 1})
	require.NoError(t, err)
	require.Equal(t, []string{"g1"}, keysOf(got))
	got, err = s.ListConversions(ctx(t), store.ListFilter{Kind: store.KindRetraction})
	require.NoError(t, err)
	require.Equal(t, []string{"m"}, keysOf(got))

	counts, err := s.CountByState(ctx(t))
	require.NoError(t, err)
	require.Equal(t, map[string]map[store.State]int{
		"google": {store.StateReady: 2, store.StateSkipped: 1, store.StateAwaitingIdentity: 1},
		"meta":   {store.StateReady: 1},
	}, counts)
	require.NoError(t, s.Ping(ctx(t)))
}

func testReportCounts(t *testing.T, open Opener) {
	s := open(t)
	day1 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	mk := func(key string, created time.Time, st store.State, reason string, withID bool) store.Conversion {
		c := conv(key)
		c.CreatedAt, c.State, c.Reason = created, st, reason
		c.OccurredAt = day1.Add(-30 * 24 * time.Hour) // grouping is by creation day, not occurrence
		if !withID {
			c.Identity = store.Identity{SubjectKey: "x", Consent: granted}
		}
		return c
	}
	write(t, s,
		mk("a", day1.Add(1*time.Hour), store.StateAccepted, "", true),
		mk("b", day1.Add(23*time.Hour+59*time.Minute), store.StateAccepted, "", true),
		mk("c", day1.Add(2*time.Hour), store.StateRejected, "invalid_gclid", true),
		mk("d", day1.Add(3*time.Hour), store.StateUnmatched, "no_identifier", false),
		mk("e", day1.Add(24*time.Hour), store.StateAccepted, "", true),   // next day
		mk("f", day1.Add(-1*time.Minute), store.StateAccepted, "", true), // before since
		mk("g", day1.Add(48*time.Hour), store.StateAccepted, "", true),   // at until: excluded
	)
	got, err := s.ReportCounts(ctx(t), day1, day1.Add(48*time.Hour))
	require.NoError(t, err)
	base := store.ReportCount{Destination: "google", Platform: "google", ConversionName: "customers/1/conversionActions/2", Rule: "won"}
	row := func(day time.Time, st store.State, reason string, withID bool, n int) store.ReportCount {
		r := base
		r.Day, r.State, r.Reason, r.WithIdentifier, r.Count = day, st, reason, withID, n
		return r
	}
	want := []store.ReportCount{
		row(day1, store.StateAccepted, "", true, 2),
		row(day1, store.StateRejected, "invalid_gclid", true, 1),
		row(day1, store.StateUnmatched, "no_identifier", false, 1),
		row(day1.Add(24*time.Hour), store.StateAccepted, "", true, 1),
	}
	sort.Slice(got, func(i, j int) bool {
		if !got[i].Day.Equal(got[j].Day) {
			return got[i].Day.Before(got[j].Day)
		}
		return got[i].State < got[j].State
	})
	require.Equal(t, want, got)
}

func testStageCounts(t *testing.T, open Opener) {
	s := open(t)
	day1 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	_, err := s.WriteBatch(ctx(t), store.Batch{StageCounts: []store.StageCount{
		{Day: day1.Add(5 * time.Hour), Source: "hubspot", Rule: "won", Count: 2}, // truncated to its UTC day
		{Day: day1, Source: "hubspot", Rule: "won", Count: 1},
		{Day: day1, Source: "hubspot", Rule: "", Count: 4},
		{Day: day1.Add(24 * time.Hour), Source: "pipedrive", Rule: "won", Count: 1},
	}})
	require.NoError(t, err)
	_, err = s.WriteBatch(ctx(t), store.Batch{StageCounts: []store.StageCount{{Day: day1, Source: "hubspot", Rule: "won", Count: 10}}})
	require.NoError(t, err)

	got, err := s.StageCounts(ctx(t), day1.Add(12*time.Hour), day1.Add(48*time.Hour))
	require.NoError(t, err)
	require.Equal(t, []store.StageCount{
		{Day: day1, Source: "hubspot", Rule: "", Count: 4},
		{Day: day1, Source: "hubspot", Rule: "won", Count: 13},
		{Day: day1.Add(24 * time.Hour), Source: "pipedrive", Rule: "won", Count: 1},
	}, got, "every day overlapping the period, counts added across batches")
	got, err = s.StageCounts(ctx(t), day1.Add(24*time.Hour), day1.Add(24*time.Hour+time.Minute))
	require.NoError(t, err)
	require.Len(t, got, 1)
}

func testStatusPageCounts(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i := range 6 {
		c := conv(fmt.Sprint("k", i))
		cs = append(cs, c)
	}
	write(t, s, cs...)
	require.Len(t, claim(t, s, store.Claim{Limit: 6, Now: at(1)}), 6)
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", []store.Outcome{
		{Key: "k0", State: store.StateAccepted},
		{Key: "k1", State: store.StateRejected, Reason: "invalid_gclid"},
		{Key: "k2", State: store.StateRejected, Reason: "invalid_gclid"},
		{Key: "k3", State: store.StateRejected, Reason: "too_old"},
	}, at(1).Add(10*time.Minute)))
	require.NoError(t, s.RecordOutcomes(ctx(t), "w1", []store.Outcome{
		{Key: "k4", State: store.StateAccepted},
		{Key: "k5", State: store.StateExpired, Reason: "outside_window"},
	}, at(2).Add(30*time.Minute)))

	hours, err := s.HourlyCounts(ctx(t), at(0), at(3))
	require.NoError(t, err)
	require.Equal(t, []store.HourCount{
		{Hour: at(1), Destination: "google", State: store.StateAccepted, Count: 1},
		{Hour: at(1), Destination: "google", State: store.StateRejected, Count: 3},
		{Hour: at(2), Destination: "google", State: store.StateAccepted, Count: 1},
		{Hour: at(2), Destination: "google", State: store.StateExpired, Count: 1},
	}, hours)

	rej, err := s.TopRejections(ctx(t), at(0), at(3), 10)
	require.NoError(t, err)
	require.Equal(t, []store.Rejection{
		{Destination: "google", Reason: "invalid_gclid", Count: 2, ExampleKey: "k1"},
		{Destination: "google", Reason: "too_old", Count: 1, ExampleKey: "k3"},
	}, rej)
	rej, err = s.TopRejections(ctx(t), at(2), at(3), 10)
	require.NoError(t, err)
	require.Empty(t, rej)
}
