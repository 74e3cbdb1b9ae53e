package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

// restatement is a candidate restatement of conversion of, at hour h, with value v.
func restatement(of string, h float64, v float64, cur string) store.Conversion {
	c := conv(of + ":restate@" + at(h).Format("15:04"))
	c.Kind, c.RetractsKey, c.OccurredAt, c.Value, c.Currency = store.KindRestatement, of, at(h), &v, cur
	return c
}

func restate(t *testing.T, s *store.Store, cs ...store.Conversion) []string {
	t.Helper()
	res, err := s.WriteBatch(ctx(t), store.Batch{Restatements: cs})
	require.NoError(t, err)
	return res.RestatedKeys
}

// testRestatements: a candidate is stored only when it changes the value the platform
// holds (the conversion's, or its latest restatement's) and is newer than it; replays,
// repeats, older changes and candidates for unknown or retracted conversions store nothing.
func testRestatements(t *testing.T, open Opener) {
	s := open(t)
	orig := conv("c1") // 120.5 EUR at -48h
	write(t, s, orig)

	require.Empty(t, restate(t, s, restatement("c1", -48, 200, "EUR")), "not newer than the conversion")
	require.Empty(t, restate(t, s, restatement("c1", -40, 120.5, "EUR")), "same value and currency")
	require.Empty(t, restate(t, s, restatement("nope", -40, 1, "EUR")), "no such conversion")

	r1 := restatement("c1", -40, 150, "EUR")
	require.Equal(t, []string{r1.Key}, restate(t, s, r1))
	require.Empty(t, restate(t, s, r1), "a replay restates nothing")
	require.Empty(t, restate(t, s, restatement("c1", -30, 150, "EUR")), "a repeat of the latest value")
	require.Empty(t, restate(t, s, restatement("c1", -44, 90, "EUR")), "older than the latest restatement")

	r2 := restatement("c1", -30, 150, "USD")
	require.Equal(t, []string{r2.Key}, restate(t, s, r2), "a currency change restates")

	// Several changes of one conversion in one batch apply in the order they happened,
	// each compared with the one before: back to the first value is a restatement too.
	r3, r4 := restatement("c1", -20, 120.5, "EUR"), restatement("c1", -10, 150, "USD")
	r3b := restatement("c1", -15, 120.5, "EUR")
	require.Equal(t, []string{r3.Key, r4.Key}, restate(t, s, r4, r3b, r3), "r3b repeats r3; r4 goes back to r2's value")
	r5 := restatement("c1", -5, 99, "USD")
	require.Equal(t, []string{r5.Key}, restate(t, s, r4, r5))

	got := get(t, s, r5.Key)
	require.Equal(t, store.KindRestatement, got.Kind)
	require.Equal(t, "c1", got.RetractsKey)
	require.Equal(t, 99.0, *got.Value)
	require.Equal(t, store.StateReady, got.State)

	// The conversion and a restatement in one batch: the restatement compares with it.
	c2 := conv("c2")
	res, err := s.WriteBatch(ctx(t), store.Batch{Conversions: []store.Conversion{c2},
		Restatements: []store.Conversion{restatement("c2", -48, 120.5, "EUR"), restatement("c2", -47, 130, "EUR")}})
	require.NoError(t, err)
	require.Equal(t, []string{c2.Key}, res.CreatedKeys)
	require.Len(t, res.RestatedKeys, 1)

	// A retracted conversion is never restated; a change before the retraction still is.
	ret := conv("c2:retract")
	ret.Kind, ret.RetractsKey, ret.OccurredAt = store.KindRetraction, "c2", at(-46)
	write(t, s, ret)
	require.Empty(t, restate(t, s, restatement("c2", -45, 500, "EUR")))
	require.Len(t, restate(t, s, restatement("c2", -46.5, 500, "EUR")), 1)

	adj, err := s.AdjustedConversions(ctx(t), []string{"c1", "nope"})
	require.NoError(t, err)
	require.Equal(t, []string{"c1", r1.Key, r2.Key, r3.Key, r4.Key, r5.Key}, keysOf(adj), "the conversion and its adjustments, oldest first")
	require.Equal(t, 120.5, *adj[0].Value, "the conversion as stored, never rewritten")
	adj, err = s.AdjustedConversions(ctx(t), []string{"c2"})
	require.NoError(t, err)
	require.Len(t, adj, 4, "c2, its two restatements and its retraction")

	_, err = s.WriteBatch(ctx(t), store.Batch{Restatements: []store.Conversion{conv("x")}})
	require.ErrorContains(t, err, "restatements[0].kind")
	bad := restatement("c1", -1, 1, "EUR")
	bad.Value = nil
	_, err = s.WriteBatch(ctx(t), store.Batch{Restatements: []store.Conversion{bad}})
	require.ErrorContains(t, err, "restatements[0].value")
}
