package crm

import "github.com/shopspring/decimal"

// Value applies the value rule of rule's destination to sc, without matching sc against
// the rule: the enricher uses it to value a conversion already planned from a thin stage
// change once the CRM's API has supplied the amount. ok is false when the mapping no
// longer has that rule and destination. value, currency and reason are as in Planned.
func (m *Mapping) Value(rule, destination string, sc StageChange) (value *decimal.Decimal, currency, reason string, ok bool) {
	if m == nil {
		return nil, "", "", false
	}
	for i := range m.rules {
		r := &m.rules[i]
		if r.rule.Name != rule {
			continue
		}
		for _, d := range r.dests {
			if d.name == destination {
				value, currency, reason = d.value.compute(sc)
				return value, currency, reason, true
			}
		}
	}
	return nil, "", "", false
}
