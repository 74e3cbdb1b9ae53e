package crm

import (
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// RuleRestate says when a later stage change of a record whose conversion was already
// created restates that conversion's value (an upsell, a partial refund):
//
//	restate_on: {amount_changed: true}
//
// A stage change restates when it still fits the rule's match, occurred after the value
// the platform holds (the conversion's or its latest restatement's), and its value (or
// currency) differs from it. Each restatement is a row of its own with its own key (see
// RestateKey), sent where the platform restates (uploader.Spec.Restates) and skipped,
// restatement_unsupported, where it cannot; a replay restates nothing twice.
type RuleRestate struct {
	// AmountChanged restates when the value computed by the destination's value rule
	// changed. Required (true): it is the only trigger so far.
	AmountChanged bool `yaml:"amount_changed"`
}

// restateSuffix and the change's time make a restatement's rule part of its key: one
// restatement per record, rule, destination and stage-change time, whatever the replays.
const restateSuffix = ":restate@"

// RestateKey is the key of the restatement a stage change at occurredAt makes of the
// conversion (source, objectType, objectID, rule, destination). The time is kept to the
// microsecond, as the store keeps it.
func RestateKey(source, objectType, objectID, rule, destination string, occurredAt time.Time) string {
	at := occurredAt.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z")
	return ConversionKey(source, objectType, objectID, rule+restateSuffix+at, destination)
}

// restateKey is the RestateKey of a planned conversion, "" when its rule has no
// restate_on, it has no value to restate to, or it is rejected.
func (r *compiledRule) restateKey(sc StageChange, d compiledDest, value *decimal.Decimal, rejected string) string {
	if r.rule.RestateOn == nil || value == nil || rejected != "" {
		return ""
	}
	return RestateKey(sc.Source, sc.ObjectType, sc.ObjectID, r.rule.Name, d.name, sc.OccurredAt)
}

// restate validates restate_on: it must say amount_changed, and every destination's value
// must come from a field (a fixed value or none never changes).
func (v *ruleValidator) restate(r MappingRule, dests []compiledDest) {
	ro := r.RestateOn
	if ro == nil {
		return
	}
	if !ro.AmountChanged {
		v.add("restate_on.amount_changed", "must be true (the only restatement trigger); remove restate_on to never restate")
		return
	}
	for i, d := range dests {
		if d.value == nil || d.value.Field == "" {
			field := "value"
			if i < len(r.Destinations) && r.Destinations[i].Value != nil {
				field = fmt.Sprintf("destinations[%d].value", i)
			}
			v.add("restate_on", "%s of destination %q is not read from a field (value.field), so its amount never changes", field, d.name)
		}
	}
}

// restateSummary is the restate_on line of Summary.
func restateSummary(RuleRestate) string {
	return "amount changed (a later matching change with another value)"
}
