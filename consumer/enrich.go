package consumer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// routeEnrichment moves a planned conversion whose stage change lacked its value (the
// value rule's field is missing) or any usable identifier to awaiting_enrichment when a CRM
// connection enriches its source (enriches reports which): the enricher fetches the deal
// and its contacts from the CRM's API. Retractions never wait: they name the conversion
// they take back. Only deals and opportunities are enriched.
func routeEnrichment(c *store.Conversion, pl crm.Planned, enriches func(source string) bool) {
	if enriches == nil || pl.Retract || !enriches(c.Source) {
		return
	}
	if c.ObjectType != crm.ObjectDeal && c.ObjectType != crm.ObjectOpportunity {
		return
	}
	if pl.ValueReason == crm.ValueReasonFieldMissing || c.State == store.StateAwaitingIdentity {
		c.State, c.Reason = store.StateAwaitingEnrichment, store.ReasonEnrichmentPending
	}
}

// RowRouted is Row followed by the pipeline's enrichment routing: a row that would wait for
// the CRM's API (enriches says which sources a connection enriches; nil = none) comes back
// in state awaiting_enrichment. `mappings explain` uses it to say what enrichment supplies.
func RowRouted(sc crm.StageChange, pl crm.Planned, ids map[string]store.Identity, replay bool, enriches func(source string) bool) store.Conversion {
	row := Row(sc, pl, ids, replay)
	routeEnrichment(&row, pl, enriches)
	return row
}

// PendingFromThin is the pending stage change stored for event index of message m: its
// key is unique per message and event (topic, partition, offset, index), so a redelivered
// message stores nothing new, and it names what the enricher must fetch before the
// mapping can plan it. A message without Kafka coordinates (a file replay, explain) is
// keyed by its fetch ref and receipt time.
func PendingFromThin(tc crm.ThinChange, m *kafka.Message, index int, now time.Time) store.PendingChange {
	received := now.UTC()
	if m != nil && !m.Time.IsZero() {
		received = m.Time.UTC()
	}
	var where string
	if m != nil && m.Topic != "" {
		where = fmt.Sprintf("%s/%d/%d/%d", m.Topic, m.Partition, m.Offset, index)
	} else {
		where = fmt.Sprintf("%s/%d", received.Format(time.RFC3339Nano), index)
	}
	sum := sha256.Sum256([]byte(tc.Source + "\x00" + tc.FetchRef + "\x00" + where))
	return store.PendingChange{Key: "pending:" + hex.EncodeToString(sum[:16]), Source: tc.Source, ObjectType: tc.ObjectType,
		ObjectID: tc.ObjectID, FetchRef: tc.FetchRef, Properties: tc.Properties, ReceivedAt: received, NextAttemptAt: now}
}
