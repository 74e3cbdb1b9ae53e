package consumer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/internal/testenv"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader/platforms"
	"gopkg.in/yaml.v3"
)

// testMappingYAML is the mapping the consumer tests plan with.
const testMappingYAML = `
- name: won
  match: {source: relay, object_type: deal, stage: closed-won}
  value: {field: amount, default_currency: USD}
  retract_on: {status: [lost]}
  destinations:
    - {destination: google-main, conversion: "123"}
    - {destination: meta-main, conversion: Purchase}
- name: hs-won
  match: {source: hubspot, object_type: deal, stage: closedwon}
  destinations:
    - {destination: google-main, conversion: "456"}
`

var testDestinations = map[string]string{"google-main": "google", "meta-main": "meta"}

func testMapping(t testing.TB) *crm.Mapping {
	t.Helper()
	var rules []crm.MappingRule
	require.NoError(t, yaml.Unmarshal([]byte(testMappingYAML), &rules))
	m, err := crm.CompileMappings(rules, platforms.Targets(testDestinations))
	require.NoError(t, err)
	return m
}

func openSQLite(t testing.TB) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "closedloop.db")
	s, err := store.Open(context.Background(), cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openPostgres(t testing.TB) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Driver = store.DriverPostgres
	cfg.DSN = testenv.PostgresDSN(t)
	s, err := store.Open(context.Background(), cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// recordingWriter keeps what it is asked to write; failN makes the first N calls fail.
type recordingWriter struct {
	mu    sync.Mutex
	msgs  []kafka.Message
	failN int
	calls int
}

func (w *recordingWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.calls <= w.failN {
		return errors.New("broker unavailable")
	}
	w.msgs = append(w.msgs, msgs...)
	return nil
}

func (w *recordingWriter) written() []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]kafka.Message(nil), w.msgs...)
}

var fastRetry = backoff{Attempts: 3, Min: time.Millisecond, Max: 5 * time.Millisecond}

// canonical returns a canonical stage-change payload.
func canonical(objectID, stage, status string, at time.Time, extra string) []byte {
	if status != "" {
		status = fmt.Sprintf(`,"status":%q`, status)
	}
	return []byte(fmt.Sprintf(`{"source":"relay","object_type":"deal","object_id":%q,"stage":%q%s,"occurred_at":%q,"amount":"100.50","currency":"EUR","contact_ids":["c-%s"]%s}`,
		objectID, stage, status, at.UTC().Format(time.RFC3339), objectID, extra))
}

// identityCapture returns an identity-capture payload for a contact of the relay.
func identityCapture(contact string, at time.Time, clicks string) []byte {
	return []byte(fmt.Sprintf(`{"subject":{"type":"contact","source":"relay","id":%q},"captured_at":%q,"click_ids":{%s}}`,
		contact, at.UTC().Format(time.RFC3339), clicks))
}

func msgAt(topic string, partition int, offset int64, value []byte) kafka.Message {
	return kafka.Message{Topic: topic, Partition: partition, Offset: offset, Value: value, Key: []byte(fmt.Sprint(offset))}
}

func newTestPipeline(t testing.TB, st StageStore, dlq messageWriter, m *Metrics) *Pipeline {
	t.Helper()
	mp := testMapping(t)
	offsets, ok := st.(OffsetReader)
	require.True(t, ok, "the test store reads consumed offsets")
	p, err := NewPipeline(PipelineConfig{
		Formats: map[string]string{"hs": crm.FormatHubSpot}, Mapping: func() *crm.Mapping { return mp },
		Normalizer: pii.Normalizer{DefaultRegion: "US"}, Store: st, Offsets: offsets, DeadLetters: dlq, DeadLetterTopic: "dlq",
		Metrics: m, Log: zaptest.NewLogger(t),
	})
	require.NoError(t, err)
	p.retry = fastRetry
	return p
}

func listAll(t testing.TB, s *store.Store) map[string]store.Conversion {
	t.Helper()
	all, err := s.ListConversions(context.Background(), store.ListFilter{})
	require.NoError(t, err)
	out := make(map[string]store.Conversion, len(all))
	for _, c := range all {
		out[c.Key] = c
	}
	return out
}
