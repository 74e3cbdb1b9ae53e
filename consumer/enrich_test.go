package consumer

import (
	"testing"

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
