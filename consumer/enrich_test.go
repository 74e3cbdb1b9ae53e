package consumer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

func TestRouteEnrichment(t *testing.T) {
	t.Parallel()
	hubspotOnly := func(s string) bool { return s == "hubspot" }
	tests := []struct {
		name     string
		source   string
		object   string
		state    store.State
		pl       crm.Planned
		enriches func(string) bool
		want     store.State
	}{
		{"thin deal without value", "hubspot", crm.ObjectDeal, store.StateReady, crm.Planned{ValueReason: crm.ValueReasonFieldMissing}, hubspotOnly, store.StateAwaitingEnrichment},
		{"deal without identifier", "hubspot", crm.ObjectDeal, store.StateAwaitingIdentity, crm.Planned{}, hubspotOnly, store.StateAwaitingEnrichment},
		{"complete deal", "hubspot", crm.ObjectDeal, store.StateReady, crm.Planned{}, hubspotOnly, store.StateReady},
		{"invalid value is not missing", "hubspot", crm.ObjectDeal, store.StateReady, crm.Planned{ValueReason: crm.ValueReasonFieldInvalid}, hubspotOnly, store.StateReady},
		{"retraction never waits", "hubspot", crm.ObjectDeal, store.StateReady, crm.Planned{Retract: true, ValueReason: crm.ValueReasonFieldMissing}, hubspotOnly, store.StateReady},
		{"no connection for the source", "pipedrive", crm.ObjectDeal, store.StateAwaitingIdentity, crm.Planned{}, hubspotOnly, store.StateAwaitingIdentity},
		{"contacts are not enriched", "hubspot", crm.ObjectContact, store.StateAwaitingIdentity, crm.Planned{}, hubspotOnly, store.StateAwaitingIdentity},
		{"enrichment off", "hubspot", crm.ObjectDeal, store.StateAwaitingIdentity, crm.Planned{}, nil, store.StateAwaitingIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := store.Conversion{Source: tt.source, ObjectType: tt.object, State: tt.state}
			routeEnrichment(&c, tt.pl, tt.enriches)
			require.Equal(t, tt.want, c.State)
			if tt.want == store.StateAwaitingEnrichment {
				require.Equal(t, store.ReasonEnrichmentPending, c.Reason)
			}
		})
	}
}

// Attio's webhooks carry ids only: the pipeline stores each event as a pending stage change
// (with the message's offset, so a redelivery stores nothing new) when a connection
// enriches attio, and dead-letters it otherwise: nothing is lost either way.
func TestPipelineStoresThinAttioEventsAsPendingOrDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	payload, err := os.ReadFile(filepath.Join("..", "crm", "testdata", "attio", "documented_record_updated.json"))
	require.NoError(t, err)
	msg := msgAt("attio", 0, 7, payload)
	msg.Headers = []kafka.Header{{Key: HeaderFormat, Value: []byte(crm.FormatAttio)}}

	s := openSQLite(t)
	dlq := &recordingWriter{}
	p := newTestPipeline(t, s, dlq, NewMetrics(prometheus.NewRegistry()))
	p.cfg.Enriches = func(src string) bool { return src == "attio" }
	st, err := p.Process(ctx, []kafka.Message{msg})
	require.NoError(t, err)
	require.Equal(t, 1, st.StageChanges)
	_, err = p.Process(ctx, []kafka.Message{msg}) // a redelivery
	require.NoError(t, err)
	require.Empty(t, dlq.written())
	want := PendingFromThin(crm.ThinChange{Source: "attio", FetchRef: "record/97052eb9-e65e-443f-a297-f2d9a4a7f795/bf071e1f-6035-429d-b874-d83ea64ea13b/41252299-f8c7-4b5e-99c9-4ff8321d2f96"}, &msg, 0, time.Now())
	got, err := s.GetPending(ctx, want.Key)
	require.NoError(t, err)
	require.Equal(t, store.StateAwaitingEnrichment, got.State)
	require.Equal(t, "bf071e1f-6035-429d-b874-d83ea64ea13b", got.ObjectID)
	require.Equal(t, want.FetchRef, got.FetchRef)
	sum, err := s.AwaitingEnrichmentSummary(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sum[0].Pending, "stored once")
	require.Empty(t, listAll(t, s), "nothing planned before the fetch")

	s2 := openSQLite(t)
	dlq2 := &recordingWriter{}
	p2 := newTestPipeline(t, s2, dlq2, NewMetrics(prometheus.NewRegistry()))
	_, err = p2.Process(ctx, []kafka.Message{msg})
	require.NoError(t, err)
	require.Len(t, dlq2.written(), 1)
	require.Equal(t, ReasonNotEnriched, headerMap(dlq2.written()[0].Headers)[HeaderErrorCode])
}
