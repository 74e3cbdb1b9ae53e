package consumer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

var t0 = time.Date(2026, 3, 2, 15, 4, 5, 0, time.UTC)

func TestPipelineWritesJoinedConversionsAndCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{}
	metrics := NewMetrics(prometheus.NewRegistry())
	p := newTestPipeline(t, s, dlq, metrics)
	mp := testMapping(t)

	msgs := []kafka.Message{
		msgAt("crm", 0, 10, canonical("D-1", "closed-won", "", t0, `,"click_ids":{"gclid":"G-1"}`)),
		msgAt("crm", 0, 11, canonical("D-2", "negotiation", "", t0, "")),                           // no rule matches
		msgAt("crm", 1, 3, canonical("D-1", "closed-won", "", t0, `,"click_ids":{"gclid":"G-1"}`)), // duplicate
	}
	st, err := p.Process(ctx, msgs)
	require.NoError(t, err)
	require.Equal(t, Stats{Messages: 3, StageChanges: 3, Matched: 2, Unmatched: 1, Planned: 2, Ready: 1, Awaiting: 1, Created: 2}, st)
	require.Empty(t, dlq.written())

	rows := listAll(t, s)
	require.Len(t, rows, 2)
	g := rows[crm.ConversionKey("relay", "deal", "D-1", "won", "google-main")]
	require.Equal(t, store.StateReady, g.State)
	require.Equal(t, "google", g.Platform)
	require.Equal(t, "123", g.ConversionName)
	require.Equal(t, mp.Version(), g.MappingVersion)
	require.NotNil(t, g.Value)
	require.InDelta(t, 100.5, *g.Value, 1e-9)
	require.Equal(t, "EUR", g.Currency)
	require.Equal(t, []string{"relay:deal:D-1", "relay:contact:c-D-1"}, g.SubjectKeys)
	require.Len(t, g.Identity.Clicks, 1)
	require.Equal(t, "G-1", g.Identity.Clicks[0].ID)
	require.True(t, g.OccurredAt.Equal(t0))

	m := rows[crm.ConversionKey("relay", "deal", "D-1", "won", "meta-main")]
	require.Equal(t, store.StateAwaitingIdentity, m.State, "a gclid is no identifier Meta can match")

	// Stage changes are counted on the day they were processed (today), not the day they
	// happened, so the report sets them beside the conversions they created.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	counts, err := s.StageCounts(ctx, today.Add(-48*time.Hour), today.Add(48*time.Hour))
	require.NoError(t, err)
	day := today
	var got []string
	for _, c := range counts {
		require.True(t, c.Day.Equal(day))
		got = append(got, fmt.Sprintf("%s/%s=%d", c.Source, c.Rule, c.Count))
	}
	require.ElementsMatch(t, []string{"relay/won=2", "relay/=1"}, got, "each stage change is counted, duplicates too, unmatched under rule \"\"")

	// The payload's click id is stored as an identity of the deal for later joins.
	ids, err := s.LookupIdentities(ctx, []string{"relay:deal:D-1"})
	require.NoError(t, err)
	require.Len(t, ids["relay:deal:D-1"].Clicks, 1)

	require.Equal(t, 1.0, testutil.ToFloat64(metrics.conversions.WithLabelValues("google-main", "ready")))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.conversions.WithLabelValues("meta-main", "awaiting_identity")))
	require.Equal(t, 2.0, testutil.ToFloat64(metrics.stageChanges.WithLabelValues("relay", OutcomeMatched)))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.stageChanges.WithLabelValues("relay", OutcomeUnmatched)))

	// Redelivery of the same batch creates nothing.
	st, err = p.Process(ctx, msgs)
	require.NoError(t, err)
	require.Equal(t, 0, st.Created)
	require.Equal(t, 2, st.Existing)
	require.Len(t, listAll(t, s), 2)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.conversions.WithLabelValues("google-main", "ready")))
}

func TestPipelineDeadLettersBadMessagesAndKeepsTheGoodEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{}
	metrics := NewMetrics(prometheus.NewRegistry())
	p := newTestPipeline(t, s, dlq, metrics)

	oneBad, err := os.ReadFile(filepath.Join("..", "crm", "testdata", "hubspot", "one_bad.json"))
	require.NoError(t, err)
	big := make([]byte, crm.MaxPayloadBytes+1)
	for i := range big {
		big[i] = ' '
	}
	withFormat := msgAt("crm", 0, 4, canonical("D-9", "closed-won", "", t0, ""))
	withFormat.Headers = []kafka.Header{{Key: HeaderFormat, Value: []byte("zoho")}}
	rawEmail := msgAt("crm", 0, 5, []byte(`{"source":"relay","object_type":"deal","object_id":"D-7","stage":"closed-won","occurred_at":"yesterday","email":"jane.doe@example.com"}`))

	msgs := []kafka.Message{
		msgAt("hs", 0, 1, oneBad),                // HubSpot batch: 2 good events, 3 bad
		msgAt("crm", 0, 2, []byte(`{"source":`)), // garbage
		msgAt("crm", 0, 3, big),                  // over 1 MiB
		withFormat,                               // unknown format from the header
		rawEmail,                                 // invalid, with raw PII in it
		msgAt("crm", 0, 6, canonical("D-8", "closed-won", "", t0, "")),
	}
	st, err := p.Process(ctx, msgs)
	require.NoError(t, err)
	require.Len(t, dlq.written(), 7)
	require.Equal(t, 7, st.DeadLettered)
	require.Equal(t, 3, st.StageChanges)

	type dl struct{ code, field, index, offset string }
	var got []dl
	for _, m := range dlq.written() {
		h := headerMap(m.Headers)
		require.NotContains(t, h[HeaderErrorReason], "jane", "reasons never echo raw PII")
		require.NotEmpty(t, h[HeaderErrorReason])
		got = append(got, dl{h[HeaderErrorCode], h[HeaderErrorField], h[HeaderErrorIndex], h[HeaderSourceOffset]})
		require.Equal(t, "dlq", m.Topic)
	}
	require.Equal(t, []dl{
		{ReasonBadEvent, "occurredAt", "1", "1"},
		{ReasonBadEvent, "objectId", "2", "1"},
		{ReasonBadEvent, "", "3", "1"},
		{ReasonUndecodable, "", "", "2"},
		{ReasonTooLarge, "", "", "3"},
		{ReasonUndecodable, "format", "", "4"},
		{ReasonUndecodable, "occurred_at", "", "5"},
	}, got)
	require.Equal(t, oneBad, dlq.written()[0].Value, "the original message travels with its reason")

	rows := listAll(t, s)
	require.Contains(t, rows, crm.ConversionKey("hubspot", "deal", "9101", "hs-won", "google-main"), "the good HubSpot events are written")
	require.Contains(t, rows, crm.ConversionKey("relay", "deal", "D-8", "won", "google-main"))
	require.Equal(t, 3.0, testutil.ToFloat64(metrics.deadLettered.WithLabelValues("hs", ReasonBadEvent)))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.deadLettered.WithLabelValues("crm", ReasonTooLarge)))
}

func TestPipelineStopsWhenTheDeadLetterTopicFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	dlq := &recordingWriter{failN: 100}
	p := newTestPipeline(t, s, dlq, nil)
	_, err := p.Process(ctx, []kafka.Message{
		msgAt("crm", 0, 1, canonical("D-1", "closed-won", "", t0, "")),
		msgAt("crm", 0, 2, []byte("garbage")),
	})
	require.ErrorContains(t, err, "dead-letter topic dlq")
	require.Equal(t, fastRetry.Attempts, dlq.calls, "retried with backoff before giving up")
	require.Empty(t, listAll(t, s), "nothing of the batch is written: it will be redelivered whole")

	// A transient failure is retried and the batch goes through.
	dlq2 := &recordingWriter{failN: 1}
	p2 := newTestPipeline(t, s, dlq2, nil)
	_, err = p2.Process(ctx, []kafka.Message{msgAt("crm", 0, 2, []byte("garbage"))})
	require.NoError(t, err)
	require.Len(t, dlq2.written(), 1)
}

func TestPipelineRetractionsAndDestinationFilterAndReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	mp := testMapping(t)
	p, err := NewPipeline(PipelineConfig{
		Mapping: func() *crm.Mapping { return mp }, Store: s, SkipDeadLetters: true, Replay: true,
		Destinations: []string{"google-main"}, Log: zaptest.NewLogger(t),
	})
	require.NoError(t, err)
	st, err := p.Process(ctx, []kafka.Message{
		msgAt("crm", 0, 1, canonical("D-1", "closed-won", "won", t0, "")),
		msgAt("crm", 0, 2, canonical("D-1", "closed-lost", "lost", t0.Add(time.Hour), "")),
		msgAt("crm", 0, 3, []byte("garbage")),
	})
	require.NoError(t, err)
	require.Equal(t, 1, st.DeadLettered, "counted, not written, in a replay")
	rows := listAll(t, s)
	require.Len(t, rows, 2, "meta-main is filtered out")
	won := rows[crm.ConversionKey("relay", "deal", "D-1", "won", "google-main")]
	require.True(t, won.Replay)
	require.Equal(t, store.StateAwaitingIdentity, won.State)
	ret := rows[crm.ConversionKey("relay", "deal", "D-1", "won:retract", "google-main")]
	require.Equal(t, store.KindRetraction, ret.Kind)
	require.Equal(t, won.Key, ret.RetractsKey)
	require.Equal(t, store.StateReady, ret.State, "a retraction names its conversion by key and never waits")
	counts, err := s.StageCounts(ctx, t0.Add(-48*time.Hour), t0.Add(48*time.Hour))
	require.NoError(t, err)
	require.Empty(t, counts, "a replay does not count stage changes the live consumer counted")
}

func TestJoinAheadJoinsAgainWhenAnEarlierBatchStoredASubjectsIdentity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	p := newTestPipeline(t, s, &recordingWriter{}, nil)
	googleKey := crm.ConversionKey("relay", "deal", "D-7", "won", "google-main")

	// The consumer joins batches 2 and 3 while batch 1 is still unwritten. Batch 1 stores
	// deal D-7's gclid (no rule matches its stage); batch 2 wins D-7 without a click id.
	b1 := p.decode([]kafka.Message{msgAt("crm", 0, 1, canonical("D-7", "negotiation", "", t0, `,"click_ids":{"gclid":"G-7"}`))})
	b2 := p.decode([]kafka.Message{msgAt("crm", 0, 2, canonical("D-7", "closed-won", "", t0, ""))})
	b3 := p.decode([]kafka.Message{msgAt("crm", 0, 3, canonical("D-8", "closed-won", "", t0, ""))})
	for _, b := range []*prepared{b1, b2, b3} {
		p.joinAhead(ctx, b)
		require.True(t, b.joined)
		require.False(t, p.changedSince(b), "nothing written yet")
	}
	require.Equal(t, 2, b2.stats.Awaiting, "joined ahead, batch 2 cannot see the gclid")

	_, err := p.finish(ctx, b1)
	require.NoError(t, err)
	require.True(t, p.changedSince(b2), "batch 1 stored an identity batch 2 looked up")
	require.False(t, p.changedSince(b3), "batch 1 stored nothing batch 3 looked up")

	st, err := p.finish(ctx, b2)
	require.NoError(t, err)
	require.Equal(t, 1, st.Ready, "joined again, as if batch 1 had been written first")
	row := listAll(t, s)[googleKey]
	require.Equal(t, store.StateReady, row.State)
	require.Len(t, row.Identity.Clicks, 1)
	require.Equal(t, "G-7", row.Identity.Clicks[0].ID)
	_, err = p.finish(ctx, b3)
	require.NoError(t, err)

	// A batch joined longer ago than the pipeline remembers is always joined again.
	old := p.decode([]kafka.Message{msgAt("crm", 0, 4, canonical("D-9", "closed-won", "", t0, ""))})
	p.joinAhead(ctx, old)
	for i := range recentWrites + 1 {
		_, err := p.Process(ctx, []kafka.Message{msgAt("crm", 1, int64(i), canonical(fmt.Sprint("E-", i), "negotiation", "", t0, ""))})
		require.NoError(t, err)
		if i == recentWrites-1 {
			require.False(t, p.changedSince(old), "every batch since is remembered, none stored an identity")
		}
	}
	require.True(t, p.changedSince(old))
}
