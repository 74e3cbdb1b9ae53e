package consumer

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// TestPipelineStoresAnInvalidCurrencyRejected: a stage change whose currency is a
// well-formed but unknown code is never given the rule's default currency: its
// conversions are stored rejected (invalid_currency, the field named), never claimed.
func TestPipelineStoresAnInvalidCurrencyRejected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	p := newTestPipeline(t, s, &recordingWriter{}, nil)
	bad := strings.Replace(string(canonical("D-1", "closed-won", "", t0, `,"click_ids":{"gclid":"G-1"}`)), `"currency":"EUR"`, `"currency":"ABC"`, 1)
	st, err := p.Process(ctx, []kafka.Message{
		msgAt("crm", 0, 1, []byte(bad)),
		msgAt("crm", 0, 2, canonical("D-2", "closed-won", "", t0, `,"click_ids":{"gclid":"G-2"}`)),
	})
	require.NoError(t, err)
	require.Zero(t, st.DeadLettered)
	rows := listAll(t, s)
	for _, dest := range []string{"google-main", "meta-main"} {
		r := rows[crm.ConversionKey("relay", "deal", "D-1", "won", dest)]
		require.Equal(t, store.StateRejected, r.State, dest)
		require.Equal(t, crm.ReasonInvalidCurrency, r.Reason)
		require.True(t, strings.HasPrefix(r.Detail, "currency: "), r.Detail)
		require.Empty(t, r.Currency, "never the default currency")
	}
	g := rows[crm.ConversionKey("relay", "deal", "D-2", "won", "google-main")]
	require.Equal(t, store.StateReady, g.State)
	require.Equal(t, "EUR", g.Currency)

	claimed, err := s.ClaimDue(ctx, store.Claim{Destination: "google-main", Owner: "t", Limit: 10, LeaseFor: 1e9})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, g.Key, claimed[0].Key)
}

// TestPipelineDropsAnInvalidPhoneAndCountsIt: a phone that is not a valid number is
// dropped (never hashed), the stage change kept, and /metrics counts it per field.
func TestPipelineDropsAnInvalidPhoneAndCountsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	metrics := NewMetrics(prometheus.NewRegistry())
	p := newTestPipeline(t, s, &recordingWriter{}, metrics)
	st, err := p.Process(ctx, []kafka.Message{
		msgAt("crm", 0, 1, canonical("D-1", "closed-won", "", t0, `,"phone":"(099) 555-1212","email":"ann@example.com"`)),
		msgAt("crm", 0, 2, canonical("D-2", "closed-won", "", t0, `,"phone":"12"`)),
		msgAt("crm", 0, 3, canonical("D-3", "closed-won", "", t0, `,"phone":"(415) 200-1234"`)),
	})
	require.NoError(t, err)
	require.Zero(t, st.DeadLettered)
	require.Equal(t, 3, st.StageChanges)
	rows := listAll(t, s)
	d1 := rows[crm.ConversionKey("relay", "deal", "D-1", "won", "meta-main")]
	require.NotEmpty(t, d1.Identity.Identifiers["email"], "the valid email is kept")
	require.Empty(t, d1.Identity.Identifiers["phone/e164"], "the invalid phone is never hashed")
	d3 := rows[crm.ConversionKey("relay", "deal", "D-3", "won", "meta-main")]
	require.NotEmpty(t, d3.Identity.Identifiers["phone/e164"])
	require.Equal(t, 2.0, testutil.ToFloat64(metrics.dropped.WithLabelValues("phone")))
}
