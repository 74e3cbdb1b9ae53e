package crm

import (
	"strings"

	"github.com/shopspring/decimal"
)

// Reasons a planned conversion carries no value or no currency although its rule asks for
// one (Planned.ValueReason). The conversion is still planned: the uploader sends it without
// a value and the platform falls back to the conversion action's default value.
const (
	ValueReasonFieldMissing    = "value_field_missing"    // the stage change lacks the value field
	ValueReasonFieldInvalid    = "value_field_invalid"    // the value field is not a decimal number
	ValueReasonCurrencyMissing = "value_currency_missing" // no currency in the payload and no default
)

// ReasonInvalidCurrency is Planned.Rejected for a conversion whose currency field is present
// but not an ISO 4217 code: sending its amount under default_currency (or any currency)
// would be a value in the wrong currency, so it is never sent. default_currency only fills
// a missing currency.
const ReasonInvalidCurrency = "invalid_currency"

// Plan returns the conversions one stage change asks for: one Planned per (rule,
// destination) whose rule fits, in rule and then destination order. unmatched is true when
// no rule's match nor retract_on fits the change (the report counts those).
//
// A change that fits a rule's match plans a conversion keyed
// ConversionKey(source, object_type, object_id, rule, destination). A change that fits a
// rule's retract_on plans a retraction (Retract true) with its own key, made with the rule
// name plus ":retract", and RetractsKey naming the conversion it takes back; whether that
// conversion exists is the store's business. Should one change fit both (stage in match,
// status in retract_on), the retraction wins: taking back is safer than claiming a win.
//
// Plan is pure: same change and mapping, same result.
func (m *Mapping) Plan(sc StageChange) (planned []Planned, unmatched bool) {
	if m == nil {
		return nil, true
	}
	unmatched = true
	for i := range m.rules {
		r := &m.rules[i]
		if !r.scopeFits(sc) {
			continue
		}
		switch {
		case r.retracts(sc):
			unmatched = false
			for _, d := range r.dests {
				planned = append(planned, Planned{
					Rule:           r.rule.Name,
					Destination:    d.name,
					Platform:       d.platform,
					ConversionName: d.conversion,
					OccurredAt:     sc.OccurredAt,
					Retract:        true,
					Key:            ConversionKey(sc.Source, sc.ObjectType, sc.ObjectID, r.rule.Name+retractSuffix, d.name),
					RetractsKey:    ConversionKey(sc.Source, sc.ObjectType, sc.ObjectID, r.rule.Name, d.name),
					MappingVersion: m.version,
				})
			}
		case r.matches(sc):
			unmatched = false
			for _, d := range r.dests {
				value, cur, reason := d.value.compute(sc)
				var rejected, detail string
				if bad := d.value.invalidCurrencyField(sc); bad != "" && value != nil {
					rejected, cur, reason = ReasonInvalidCurrency, "", ""
					detail = bad + ": not an ISO 4217 currency code (3 letters, e.g. USD); default_currency fills only a missing one"
				}
				planned = append(planned, Planned{
					Rule:           r.rule.Name,
					Destination:    d.name,
					Platform:       d.platform,
					ConversionName: d.conversion,
					Value:          value,
					Currency:       cur,
					ValueReason:    reason,
					Rejected:       rejected,
					RejectedDetail: detail,
					OccurredAt:     sc.OccurredAt,
					Key:            ConversionKey(sc.Source, sc.ObjectType, sc.ObjectID, r.rule.Name, d.name),
					RestateKey:     r.restateKey(sc, d, value, rejected),
					MappingVersion: m.version,
				})
			}
		}
	}
	return planned, unmatched
}

// scopeFits checks the matchers that say which objects a rule is about (source,
// object_type, pipeline); they bound both match and retract_on.
func (r *compiledRule) scopeFits(sc StageChange) bool {
	mt := r.rule.Match
	return equalFoldSet(mt.Source, sc.Source) && equalFoldSet(mt.ObjectType, sc.ObjectType) && equalFoldSet(mt.Pipeline, sc.Pipeline)
}

func (r *compiledRule) matches(sc StageChange) bool {
	mt := r.rule.Match
	if len(mt.Stage) > 0 && !mt.Stage.has(sc.Stage) {
		return false
	}
	if len(mt.Status) > 0 && !mt.Status.has(sc.Status) {
		return false
	}
	return true
}

func (r *compiledRule) retracts(sc StageChange) bool {
	ro := r.rule.RetractOn
	if ro == nil {
		return false
	}
	return (sc.Stage != "" && ro.Stage.has(sc.Stage)) || (sc.Status != "" && ro.Status.has(sc.Status))
}

// equalFoldSet reports whether an optional matcher fits: unset fits anything.
func equalFoldSet(want, got string) bool {
	want = strings.TrimSpace(want)
	return want == "" || strings.EqualFold(want, strings.TrimSpace(got))
}

// compute applies a value rule to a stage change. A nil rule gives no value and no reason.
// When the rule's field is missing or not a number, the value is nil and reason says why.
func (v *ValueRule) compute(sc StageChange) (value *decimal.Decimal, currency, reason string) {
	if v == nil {
		return nil, "", ""
	}
	var base decimal.Decimal
	switch {
	case v.Fixed != nil:
		base = *v.Fixed
	case v.Field != "":
		var ok bool
		base, reason, ok = fieldValue(v.Field, sc)
		if !ok {
			return nil, "", reason
		}
	default:
		return nil, "", ""
	}
	if v.Multiplier != nil {
		base = base.Mul(*v.Multiplier)
	}
	currency = v.currency(sc)
	if currency == "" {
		reason = ValueReasonCurrencyMissing
	}
	return &base, currency, reason
}

func fieldValue(field string, sc StageChange) (decimal.Decimal, string, bool) {
	if field == "amount" {
		if sc.Amount == nil {
			return decimal.Decimal{}, ValueReasonFieldMissing, false
		}
		return *sc.Amount, "", true
	}
	name, _ := valuePath(field, "amount")
	raw, ok := sc.Properties[name]
	if !ok || strings.TrimSpace(raw) == "" {
		return decimal.Decimal{}, ValueReasonFieldMissing, false
	}
	d, err := decimal.NewFromString(strings.TrimSpace(raw))
	if err != nil {
		return decimal.Decimal{}, ValueReasonFieldInvalid, false
	}
	return d, "", true
}

// currency resolves the currency for a value: currency_field (default "currency" for field
// values, none for fixed ones), then default_currency when that is empty. A present but
// invalid currency gives "" (invalidCurrencyField names it).
func (v *ValueRule) currency(sc StageChange) string {
	_, got := v.currencyValue(sc)
	switch {
	case got == "":
		return v.DefaultCurrency
	case ValidCurrency(got):
		return got
	}
	return ""
}

// currencyValue is where the rule reads its currency ("" for none) and the value found
// there, trimmed and upper-cased.
func (v *ValueRule) currencyValue(sc StageChange) (ref, got string) {
	if v == nil {
		return "", ""
	}
	ref = v.CurrencyField
	if ref == "" && v.Field != "" {
		ref = "currency"
	}
	switch ref {
	case "":
	case "currency":
		got = sc.Currency
	default:
		name, _ := valuePath(ref, "currency")
		got = sc.Properties[name]
	}
	return ref, strings.ToUpper(strings.TrimSpace(got))
}

// invalidCurrencyField names the currency field (as the mapping refers to it: "currency"
// or "properties.<name>") when the rule gives a value and that field is present but not
// an ISO 4217 code; "" otherwise.
func (v *ValueRule) invalidCurrencyField(sc StageChange) string {
	if v == nil || (v.Fixed == nil && v.Field == "") {
		return ""
	}
	ref, got := v.currencyValue(sc)
	if got == "" || ValidCurrency(got) {
		return ""
	}
	return ref
}
