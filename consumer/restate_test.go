package consumer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/platforms"
)

// TestPipelineRestatesChangedAmounts: won at 100, a later change of the same deal at 150
// restates on both destinations once (Meta's row is made too, and its uploader skips it:
// restatement_unsupported), a repeat of 150 and every redelivery restate nothing, and a
// rule without restate_on never restates.
func TestPipelineRestatesChangedAmounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openSQLite(t)
	var rules []crm.MappingRule
	require.NoError(t, yaml.Unmarshal([]byte(`
- name: won
  match: {source: relay, object_type: deal, stage: closed-won}
  value: {field: amount, default_currency: USD}
  restate_on: {amount_changed: true}
  destinations:
    - {destination: google-main, conversion: "123"}
    - {destination: meta-main, conversion: Purchase}
- name: plain
  match: {source: relay, object_type: deal, stage: closed-won}
  value: {field: amount, default_currency: USD}
  destinations:
    - {destination: google-main, conversion: "456"}
`), &rules))
	mp, err := crm.CompileMappings(rules, platforms.Targets(testDestinations))
	require.NoError(t, err)
	p, err := NewPipeline(PipelineConfig{Mapping: func() *crm.Mapping { return mp }, Normalizer: pii.Normalizer{DefaultRegion: "US"},
		Store: s, Offsets: s, DeadLetters: &recordingWriter{}, DeadLetterTopic: "dlq", Log: zaptest.NewLogger(t)})
	require.NoError(t, err)
	p.retry = fastRetry

	won := func(at time.Time, amount string) []byte {
		return []byte(fmt.Sprintf(`{"source":"relay","object_type":"deal","object_id":"D-9","stage":"closed-won","occurred_at":%q,"amount":%q,"currency":"EUR","click_ids":{"gclid":"G-9"}}`,
			at.UTC().Format(time.RFC3339), amount))
	}
	restatements := func() []store.Conversion {
		rs, err := s.ListConversions(ctx, store.ListFilter{Kind: store.KindRestatement})
		require.NoError(t, err)
		return rs
	}
	process := func(msgs ...kafka.Message) {
		_, err := p.Process(ctx, msgs)
		require.NoError(t, err)
	}

	first := []kafka.Message{msgAt("crm", 0, 1, won(t0, "100"))}
	process(first...)
	require.Empty(t, restatements(), "the conversion itself is no restatement")

	second := msgAt("crm", 0, 2, won(t0.Add(time.Hour), "150"))
	process(second)
	rs := restatements()
	require.Len(t, rs, 2, "one per destination of the restating rule")
	for _, r := range rs {
		require.Equal(t, crm.ConversionKey("relay", "deal", "D-9", "won", r.Destination), r.RetractsKey)
		require.Equal(t, crm.RestateKey("relay", "deal", "D-9", "won", r.Destination, t0.Add(time.Hour)), r.Key)
		require.Equal(t, 150.0, *r.Value)
		require.Equal(t, store.StateReady, r.State)
	}

	process(msgAt("crm", 0, 3, won(t0.Add(2*time.Hour), "150")))
	process(append(first, second)...) // redelivered
	require.Len(t, restatements(), 2, "a repeated amount and redeliveries restate nothing")

	// Changes in one batch apply in the order they happened: 90, then 90 again (nothing),
	// then 95, on each destination.
	process(msgAt("crm", 0, 4, won(t0.Add(3*time.Hour), "90")), msgAt("crm", 0, 5, won(t0.Add(4*time.Hour), "95")),
		msgAt("crm", 0, 6, won(t0.Add(3*time.Hour+time.Minute), "90")))
	rs = restatements()
	require.Len(t, rs, 6)
	last := map[string]store.Conversion{}
	for _, r := range rs {
		if l, ok := last[r.Destination]; !ok || r.OccurredAt.After(l.OccurredAt) {
			last[r.Destination] = r
		}
	}
	for _, r := range last {
		require.Equal(t, 95.0, *r.Value, "%s ends at the latest value", r.Destination)
	}
	for _, r := range rs {
		require.Equal(t, "won", r.Rule, "the rule without restate_on never restates")
	}
}
