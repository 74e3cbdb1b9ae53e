package main

import (
	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// explainHistory is what explain remembers of the conversions its payloads made, in
// order, so that a later change shows the adjustment the worker would make of them, as the
// store and the dispatcher decide it (store.Batch.Restatements, uploader.AdjustedReader):
// each conversion is taken as accepted.
type explainHistory struct {
	made map[string]*explainMade // conversion key → what was made of it
}

type explainMade struct {
	row       store.Conversion // the conversion as explained, taken as accepted
	value     *decimal.Decimal // the latest value sent: the conversion's or a restatement's
	currency  string
	at        store.Conversion // the latest row by occurred_at (for its time)
	retracted bool
}

func newExplainHistory() *explainHistory {
	return &explainHistory{made: map[string]*explainMade{}}
}

// adjust looks at one explained row of planned conversion p. A retraction gets the
// conversion it takes back (row.Adjusted) when an earlier payload made it. A conversion of
// a rule with restate_on that an earlier payload made is an adjustment (adjusts true):
// the restatement row to explain, or nil when the store would make none (same value and
// currency, not newer, or retracted). Any other conversion is remembered.
func (h *explainHistory) adjust(sc crm.StageChange, p crm.Planned, row *store.Conversion) (restatement *store.Conversion, adjusts bool) {
	if p.Retract {
		if m, ok := h.made[p.RetractsKey]; ok {
			orig := m.row
			row.Adjusted = &orig
			m.retracted = true
		}
		return nil, false
	}
	m, ok := h.made[p.Key]
	if !ok {
		orig := *row
		orig.State = store.StateAccepted
		h.made[p.Key] = &explainMade{row: orig, value: p.Value, currency: p.Currency, at: orig}
		return nil, false
	}
	if p.RestateKey == "" {
		return nil, false // the same conversion again: the store keeps the first
	}
	if m.retracted || !p.OccurredAt.After(m.at.OccurredAt) ||
		(m.value != nil && p.Value != nil && m.value.Equal(*p.Value) && m.currency == p.Currency) {
		return nil, true
	}
	r := consumer.RestatementRow(sc, p, false)
	orig := m.row
	r.Adjusted = &orig
	m.value, m.currency, m.at = p.Value, p.Currency, r
	return &r, true
}
