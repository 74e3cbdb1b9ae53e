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
