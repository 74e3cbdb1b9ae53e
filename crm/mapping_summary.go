package crm

import (
	"fmt"
	"strings"
)

// Summary describes every rule for humans (`closedloop mappings check`): its matchers,
// what retracts it, and per destination the platform, the conversion and the value rule.
// The text is stable for a given mapping; it is not meant to be parsed.
func (m *Mapping) Summary() string {
	if m == nil {
		return "no mapping\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d rule(s), version %s\n", len(m.rules), m.version)
	for i, r := range m.rules {
		fmt.Fprintf(&b, "\nmappings[%d] %s\n", i, r.rule.Name)
		fmt.Fprintf(&b, "  match:      %s\n", matchSummary(r.rule.Match))
		if ro := r.rule.RetractOn; ro != nil {
			fmt.Fprintf(&b, "  retract on: %s\n", retractSummary(*ro))
		}
		if ro := r.rule.RestateOn; ro != nil {
			fmt.Fprintf(&b, "  restate on: %s\n", restateSummary(*ro))
		}
		fmt.Fprintf(&b, "  value:      %s\n", r.rule.Value.summary())
		for _, d := range r.dests {
			fmt.Fprintf(&b, "  -> %s (%s): %s", d.name, d.platform, conversionSummary(d.target, d.conversion)+namedSummary(d.convName, d.conversion))
			if d.value != r.rule.Value {
				fmt.Fprintf(&b, ", value %s", d.value.summary())
			}
			b.WriteString("\n")
			api := d.target.API
			if api == "" {
				api = d.platform
			}
			if r.rule.RetractOn != nil && !d.target.Retracts {
				fmt.Fprintf(&b, "     ! retract_on has no effect on %s: %s has no retraction (its retraction rows end skipped, retraction_unsupported)\n", d.name, api)
			}
			if r.rule.RestateOn != nil && !d.target.Restates {
				fmt.Fprintf(&b, "     ! restate_on has no effect on %s: %s has no restatement (its restatement rows end skipped, restatement_unsupported)\n", d.name, api)
			}
		}
	}
	return b.String()
}

func matchSummary(m RuleMatch) string {
	var parts []string
	add := func(name, v string) {
		if strings.TrimSpace(v) != "" {
			parts = append(parts, name+"="+v)
		}
	}
	add("source", m.Source)
	add("object_type", m.ObjectType)
	add("pipeline", m.Pipeline)
	if len(m.Stage) > 0 {
		parts = append(parts, "stage in ["+strings.Join(m.Stage, ", ")+"]")
	}
	if len(m.Status) > 0 {
		parts = append(parts, "status in ["+strings.Join(m.Status, ", ")+"]")
	}
	return strings.Join(parts, " and ")
}

func retractSummary(r RuleRetract) string {
	var parts []string
	if len(r.Stage) > 0 {
		parts = append(parts, "stage in ["+strings.Join(r.Stage, ", ")+"]")
	}
	if len(r.Status) > 0 {
		parts = append(parts, "status in ["+strings.Join(r.Status, ", ")+"]")
	}
	return strings.Join(parts, " or ")
}

func conversionSummary(t Target, conv string) string {
	if t.Noun == "" || t.Noun == "event" {
		return fmt.Sprintf("event %q", conv)
	}
	return t.Noun + " " + conv
}

func (v *ValueRule) summary() string {
	if v == nil || (v.Field == "" && v.Fixed == nil) {
		return "none (the platform's default value)"
	}
	var b strings.Builder
	if v.Fixed != nil {
		b.WriteString("fixed " + decimalString(v.Fixed))
	} else {
		b.WriteString(v.Field)
	}
	if v.Multiplier != nil {
		b.WriteString(" x " + decimalString(v.Multiplier))
	}
	ref := v.CurrencyField
	if ref == "" && v.Field != "" {
		ref = "currency"
	}
	switch {
	case ref != "" && v.DefaultCurrency != "":
		fmt.Fprintf(&b, ", currency from %s else %s", ref, v.DefaultCurrency)
	case ref != "":
		fmt.Fprintf(&b, ", currency from %s", ref)
	default:
		fmt.Fprintf(&b, " %s", v.DefaultCurrency)
	}
	return b.String()
}
