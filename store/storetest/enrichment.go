package storetest

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// thin returns a conversion awaiting enrichment: a HubSpot deal with no value and no identity.
func thin(key, source string) store.Conversion {
	c := conv(key)
	c.Source, c.State, c.Reason, c.Value, c.Currency = source, store.StateAwaitingEnrichment, store.ReasonEnrichmentPending, nil, ""
	c.SubjectKeys, c.Identity = []string{source + ":deal:d-" + key}, store.Identity{}
	return c
}

func claimEnrichment(t *testing.T, s *store.Store, c store.EnrichmentClaim) []store.Conversion {
	t.Helper()
	got, err := s.ClaimEnrichment(ctx(t), c)
	require.NoError(t, err)
	return got
}

func testClaimEnrichment(t *testing.T, open Opener) {
	s := open(t)
	later := thin("later", "hubspot")
	later.NextAttemptAt = at(2)
	write(t, s, thin("a", "hubspot"), thin("b", "hubspot"), thin("p", "pipedrive"), later, conv("ready"))

	got := claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e1", Limit: 10, LeaseFor: time.Minute, Now: at(1)})
	require.ElementsMatch(t, []string{"a", "b"}, keysOf(got), "due rows of the source only; not the ready row, not the later one")
	for _, c := range got {
		require.Equal(t, store.StateAwaitingEnrichment, c.State, "a claimed row stays awaiting enrichment")
		require.Equal(t, "e1", c.LeaseOwner)
	}
	require.Empty(t, claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e2", Limit: 10, LeaseFor: time.Minute, Now: at(1)}),
		"leased rows are not claimed twice")
	again := claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e2", Limit: 10, LeaseFor: time.Minute, Now: at(3)})
	require.ElementsMatch(t, []string{"a", "b", "later"}, keysOf(again), "expired leases are claimed again: a crashed enricher loses nothing")
	require.Equal(t, []string{"p"}, keysOf(claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"pipedrive", "close"}, Owner: "e1", Limit: 1, LeaseFor: time.Minute, Now: at(1)})))

	for _, bad := range []store.EnrichmentClaim{
		{Owner: "o", Limit: 1, LeaseFor: time.Second},
		{Sources: []string{"x"}, Limit: 1, LeaseFor: time.Second},
		{Sources: []string{"x"}, Owner: "o", LeaseFor: time.Second},
		{Sources: []string{"x"}, Owner: "o", Limit: 1},
	} {
		_, err := s.ClaimEnrichment(ctx(t), bad)
		var inv *store.InvalidError
		require.ErrorAs(t, err, &inv)
	}
}

func testClaimEnrichmentConcurrent(t *testing.T, open Opener) {
	s := open(t)
	var cs []store.Conversion
	for i := 0; i < 60; i++ {
		cs = append(cs, thin(string(rune('A'+i%26))+string(rune('a'+i/26)), "hubspot"))
	}
	write(t, s, cs...)
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	concurrently(t, 4, func(i int) error {
		for {
			got, err := s.ClaimEnrichment(ctx(t), store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e" + string(rune('0'+i)), Limit: 7, LeaseFor: time.Hour, Now: at(1)})
			if err != nil || len(got) == 0 {
				return err
			}
			mu.Lock()
			for _, c := range got {
				seen[c.Key]++
			}
			mu.Unlock()
		}
	})
	require.Len(t, seen, 60)
	for k, n := range seen {
		require.Equal(t, 1, n, "row %s claimed %d times", k, n)
	}
}

func testCompleteEnrichment(t *testing.T, open Opener) {
	s := open(t)
	write(t, s, thin("won", "hubspot"), thin("wait", "hubspot"), thin("gone", "hubspot"), thin("retry", "hubspot"), thin("stolen", "hubspot"))
	claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e1", Limit: 10, LeaseFor: time.Minute, Now: at(1)})

	v := 4200.0
	id := store.Identity{Identifiers: pii.Set{"email": "ab12"}}
	n, err := s.CompleteEnrichment(ctx(t), "e1", []store.Enriched{
		{Key: "won", State: store.StateReady, SetValue: true, Value: &v, Currency: "USD",
			SubjectKeys: []string{"hubspot:deal:d-won", "hubspot:contact:7"}, Identity: id, CountAttempt: true},
		{Key: "wait", State: store.StateAwaitingIdentity, Reason: "no_identifier", SetValue: true, Value: &v, Currency: "USD",
			SubjectKeys: []string{"hubspot:deal:d-wait", "hubspot:contact:8"}},
		{Key: "gone", State: store.StateUnmatched, Reason: store.ReasonCRMRecordNotFound},
		{Key: "retry", State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMRetry, Detail: "429", NextAttemptAt: at(5), CountAttempt: true},
	})
	require.NoError(t, err)
	require.Equal(t, 4, n)

	won := get(t, s, "won")
	require.Equal(t, store.StateReady, won.State)
	require.Equal(t, 4200.0, *won.Value)
	require.Equal(t, "USD", won.Currency)
	require.Equal(t, []string{"hubspot:deal:d-won", "hubspot:contact:7"}, won.SubjectKeys)
	require.Equal(t, pii.Set{"email": "ab12"}, won.Identity.Identifiers)
	require.Empty(t, won.LeaseOwner, "the lease is released")
	require.Equal(t, 1, won.Attempts)

	waiting, err := s.AwaitingForSubjects(ctx(t), []string{"hubspot:contact:8"})
	require.NoError(t, err)
	require.Equal(t, []string{"wait"}, keysOf(waiting), "a row moved to awaiting_identity is found by its fetched contacts")

	gone := get(t, s, "gone")
	require.Equal(t, store.StateUnmatched, gone.State)
	require.Equal(t, store.ReasonCRMRecordNotFound, gone.Reason)
	require.Nil(t, gone.Value, "no SetValue: value untouched")

	retry := get(t, s, "retry")
	require.Equal(t, store.StateAwaitingEnrichment, retry.State)
	require.True(t, retry.NextAttemptAt.Equal(at(5)))
	require.Equal(t, "429", retry.Detail)
	require.Empty(t, claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e2", Limit: 10, LeaseFor: time.Minute, Now: at(0.5)}),
		"a retried row is not due before its next attempt (and stolen is still leased)")
	require.ElementsMatch(t, []string{"retry", "stolen"}, keysOf(claimEnrichment(t, s, store.EnrichmentClaim{Sources: []string{"hubspot"}, Owner: "e2", Limit: 10, LeaseFor: time.Minute, Now: at(5)})),
		"a retried row is due at its next attempt")

	n, err = s.CompleteEnrichment(ctx(t), "someone-else", []store.Enriched{{Key: "stolen", State: store.StateReady}})
	require.NoError(t, err)
	require.Zero(t, n, "another owner's lease is left alone")
	n, err = s.CompleteEnrichment(ctx(t), "e1", []store.Enriched{{Key: "won", State: store.StateReady}})
	require.NoError(t, err)
	require.Zero(t, n, "a row that left awaiting_enrichment is not touched")

	_, err = s.CompleteEnrichment(ctx(t), "e1", []store.Enriched{{Key: "x", State: store.StateSent}})
	var inv *store.InvalidError
	require.ErrorAs(t, err, &inv)
	_, err = s.CompleteEnrichment(ctx(t), "e1", []store.Enriched{{Key: "x", State: store.StateUnmatched}})
	require.ErrorAs(t, err, &inv, "unmatched needs a reason")
}

func testFetchCache(t *testing.T, open Opener) {
	s := open(t)
	c := ctx(t)
	require.NoError(t, s.PutFetchCache(c, []store.FetchCacheEntry{
		{Connection: "hs", Kind: "deal", ID: "1", Found: true, Data: json.RawMessage(`{"amount":"10"}`), FetchedAt: at(0)},
		{Connection: "hs", Kind: "deal", ID: "2", Found: false, FetchedAt: at(0)},
		{Connection: "hs", Kind: "deal", ID: "old", Found: true, Data: json.RawMessage(`{}`), FetchedAt: at(-10)},
		{Connection: "pd", Kind: "deal", ID: "1", Found: true, Data: json.RawMessage(`{"amount":"99"}`), FetchedAt: at(0)},
	}))
	got, err := s.FetchCache(c, "hs", "deal", []string{"1", "2", "old", "missing"}, at(-1))
	require.NoError(t, err)
	require.Len(t, got, 2, "only fresh entries of that connection")
	require.JSONEq(t, `{"amount":"10"}`, string(got["1"].Data))
	require.True(t, got["1"].Found)
	require.False(t, got["2"].Found)
	require.True(t, got["1"].FetchedAt.Equal(at(0)))

	require.NoError(t, s.PutFetchCache(c, []store.FetchCacheEntry{{Connection: "hs", Kind: "deal", ID: "old", Found: true, Data: json.RawMessage(`{"amount":"5"}`), FetchedAt: at(1)}}))
	got, err = s.FetchCache(c, "hs", "deal", []string{"old"}, at(-1))
	require.NoError(t, err)
	require.JSONEq(t, `{"amount":"5"}`, string(got["old"].Data), "a refetch replaces the entry")

	require.NoError(t, s.PutFetchCache(c, []store.FetchCacheEntry{
		{Connection: "hs", Kind: "contact", ID: "7", Found: true, Data: json.RawMessage(`{"n":1}`), FetchedAt: at(1)},
		{Connection: "hs", Kind: "contact", ID: "7", Found: true, Data: json.RawMessage(`{"n":2}`), FetchedAt: at(2)},
	}), "an object twice in one call")
	got, err = s.FetchCache(c, "hs", "contact", []string{"7"}, at(-1))
	require.NoError(t, err)
	require.JSONEq(t, `{"n":2}`, string(got["7"].Data), "the last entry wins")
	require.True(t, got["7"].FetchedAt.Equal(at(2)))

	var inv *store.InvalidError
	require.ErrorAs(t, s.PutFetchCache(c, []store.FetchCacheEntry{{Kind: "deal", ID: "1"}}), &inv)
	require.ErrorAs(t, s.PutFetchCache(c, []store.FetchCacheEntry{{Connection: "hs", Kind: "deal", ID: "1", Data: json.RawMessage(`{`)}}), &inv)
}

func testConnectionStates(t *testing.T, open Opener) {
	s := open(t)
	c := ctx(t)
	got, err := s.ConnectionStates(c)
	require.NoError(t, err)
	require.Empty(t, got)
	require.NoError(t, s.SetConnectionState(c, store.ConnectionState{Name: "hs", PausedUntil: at(1), Reason: "crm_unauthorized", Detail: "401"}))
	require.NoError(t, s.SetConnectionState(c, store.ConnectionState{Name: "pd"}))
	got, err = s.ConnectionStates(c)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "hs", got[0].Name)
	require.True(t, got[0].Paused(at(0)))
	require.False(t, got[0].Paused(at(2)))
	require.False(t, got[1].Paused(at(0)))
	require.NoError(t, s.SetConnectionState(c, store.ConnectionState{Name: "hs"}), "resume")
	got, err = s.ConnectionStates(c)
	require.NoError(t, err)
	require.False(t, got[0].Paused(at(0)))
	require.Empty(t, got[0].Reason)
}
