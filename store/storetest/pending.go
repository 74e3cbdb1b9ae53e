package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/store"
)

func pendingChange(key, source string, h float64) store.PendingChange {
	return store.PendingChange{Key: key, Source: source, ObjectType: "deal", ObjectID: "rec-" + key,
		FetchRef: "record:obj:rec-" + key + ":attr", Properties: map[string]string{"attio_attribute_id": "attr"},
		ReceivedAt: at(h), NextAttemptAt: at(h)}
}

func testPendingChanges(t *testing.T, open Opener) {
	s := open(t)
	b := store.Batch{Pending: []store.PendingChange{pendingChange("a", "attio", 0), pendingChange("b", "attio", 0), pendingChange("x", "other", 0)}}
	_, err := s.WriteBatch(ctx(t), b)
	require.NoError(t, err)
	b.Pending[0].ObjectID = "changed"
	_, err = s.WriteBatch(ctx(t), b)
	require.NoError(t, err, "a redelivered message inserts nothing")
	got, err := s.GetPending(ctx(t), "a")
	require.NoError(t, err)
	require.Equal(t, "rec-a", got.ObjectID, "the first write wins")
	require.Equal(t, store.StateAwaitingEnrichment, got.State)
	require.Equal(t, "attr", got.Properties["attio_attribute_id"])
	require.True(t, got.ReceivedAt.Equal(at(0)))

	claim := store.EnrichmentClaim{Sources: []string{"attio"}, Owner: "e1", Limit: 10, LeaseFor: time.Minute, Now: at(1)}
	list, err := s.ClaimPending(ctx(t), claim)
	require.NoError(t, err)
	require.Len(t, list, 2, "due rows of the source only")
	claim.Owner = "e2"
	list2, err := s.ClaimPending(ctx(t), claim)
	require.NoError(t, err)
	require.Empty(t, list2, "leased rows are not claimed twice")

	n, err := s.CompletePending(ctx(t), "e2", []store.PendingResult{{Key: "a", State: store.PendingPlanned}})
	require.NoError(t, err)
	require.Zero(t, n, "another owner's lease is left alone")
	n, err = s.CompletePending(ctx(t), "e1", []store.PendingResult{
		{Key: "a", State: store.PendingPlanned, Conversions: 2, CountAttempt: true},
		{Key: "b", State: store.StateAwaitingEnrichment, Reason: store.ReasonCRMRetry, Detail: "HTTP 503", NextAttemptAt: at(2), CountAttempt: true},
	})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	got, err = s.GetPending(ctx(t), "a")
	require.NoError(t, err)
	require.Equal(t, store.PendingPlanned, got.State)
	require.Equal(t, 2, got.Conversions)
	require.Empty(t, got.LeaseOwner)

	summary, err := s.AwaitingEnrichmentSummary(ctx(t))
	require.NoError(t, err)
	require.Len(t, summary, 2)
	require.Equal(t, "attio", summary[0].Source)
	require.Equal(t, 1, summary[0].Pending)
	require.Equal(t, 1, summary[0].Reasons[store.ReasonCRMRetry])

	claim.Now = at(1.5)
	list, err = s.ClaimPending(ctx(t), claim)
	require.NoError(t, err)
	require.Empty(t, list, "not due before next_attempt_at")
	claim.Now = at(3)
	list, err = s.ClaimPending(ctx(t), claim)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, 1, list[0].Attempts)
	// The lease runs out without a result (a crash): claimed again, nothing lost.
	claim.Now, claim.Owner = at(4), "e3"
	list, err = s.ClaimPending(ctx(t), claim)
	require.NoError(t, err)
	require.Len(t, list, 1)
	_, err = s.CompletePending(ctx(t), "e3", []store.PendingResult{{Key: "b", State: store.StateUnmatched}})
	var inv *store.InvalidError
	require.ErrorAs(t, err, &inv, "unmatched needs a reason")
	_, err = s.CompletePending(ctx(t), "e3", []store.PendingResult{{Key: "b", State: store.StateUnmatched, Reason: store.ReasonCRMRecordNotFound}})
	require.NoError(t, err)
	got, err = s.GetPending(ctx(t), "b")
	require.NoError(t, err)
	require.Equal(t, store.StateUnmatched, got.State)

	write(t, s, thin("t1", "hubspot"))
	summary, err = s.AwaitingEnrichmentSummary(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []string{"hubspot", "other"}, []string{summary[0].Source, summary[1].Source})
	require.Equal(t, 1, summary[0].Conversions)
	require.True(t, summary[0].Oldest.Equal(at(0)))

	_, err = s.WriteBatch(ctx(t), store.Batch{Pending: []store.PendingChange{{Key: "bad"}}})
	require.ErrorAs(t, err, &inv)
}
