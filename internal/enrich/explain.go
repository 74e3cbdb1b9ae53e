package enrich

import (
	"maps"
	"time"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// Helpers for callers that enrich one stage change outside the enricher (`mappings explain
// --enrich`): the same connection choice, identity capture and deal application the
// enricher uses.

// ConnectionFor returns the connection (name and settings, defaults filled) that enriches
// stage changes of source; ok is false when none does.
func (c Config) ConnectionFor(source string) (name string, conn Connection, ok bool) {
	for _, n := range c.Names() {
		if cc := c.Connections[n].WithDefaults(); cc.Source == source {
			return n, cc, true
		}
	}
	return "", Connection{}, false
}

// ContactCapture is a fetched contact as the identity capture the enricher stores for it:
// subject "<source>:contact:<id>", hashed identifiers, click ids.
func ContactCapture(source string, ct Contact, at time.Time) store.IdentityCapture {
	return contactCapture(source, ct, at)
}

// Apply returns sc with what the fetched deal supplies: its amount and currency (when
// the CRM has them), its contacts added to sc's, its properties under sc's own.
func (d Deal) Apply(sc crm.StageChange) crm.StageChange {
	if d.Amount != nil {
		a := *d.Amount
		sc.Amount = &a
	}
	if d.Currency != "" {
		sc.Currency = d.Currency
	}
	ids := append([]string{}, sc.ContactIDs...)
	for _, id := range d.ContactIDs {
		if !contains(ids, id) {
			ids = append(ids, id)
		}
	}
	sc.ContactIDs = ids
	if len(d.Properties) > 0 {
		props := maps.Clone(d.Properties)
		maps.Copy(props, sc.Properties)
		sc.Properties = props
	}
	return sc
}

// ThinStageChange is the stage change a thin event describes once its record d is
// fetched: the stage attribute's current title, the time it took that value (when the CRM
// says so and it is not after the event arrived at receivedAt; else receivedAt), the
// deal's value and people. ok is false when the attribute is no stage (d.Stage empty).
func ThinStageChange(source, objectType, objectID string, props map[string]string, receivedAt time.Time, d Deal) (crm.StageChange, bool) {
	if d.Stage == "" {
		return crm.StageChange{}, false
	}
	sc := crm.StageChange{Source: source, ObjectType: objectType, ObjectID: objectID, Pipeline: d.Pipeline,
		Stage: d.Stage, OccurredAt: receivedAt.UTC(), Amount: d.Amount, Currency: d.Currency, ContactIDs: d.ContactIDs,
		Properties: map[string]string{}}
	if d.StageAt != nil && !d.StageAt.After(receivedAt) {
		sc.OccurredAt = d.StageAt.UTC()
	}
	for k, v := range props {
		sc.Properties[k] = v
	}
	for k, v := range d.Properties {
		sc.Properties[k] = v
	}
	return sc, true
}
