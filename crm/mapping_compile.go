package crm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"github.com/shopspring/decimal"
	"golang.org/x/text/currency"
	"gopkg.in/yaml.v3"
)

// Target is what a mapping needs to know about one configured destination's platform; the
// platform's package says it (uploader.Spec), the config passes it in.
type Target struct {
	Platform string
	// Noun is what the platform calls a conversion name ("conversion action"); "" = event.
	Noun string
	// Check validates a conversion name; nil accepts any name without surrounding spaces or
	// control characters.
	Check func(name string) error
	// Retracts says the platform can take a conversion back.
	Retracts bool
	// Restates says the platform can change the value of a conversion it accepted.
	Restates bool
	// ResolvesNames says the platform looks conversions up by name (`conversion: {name}`).
	ResolvesNames bool
	// Resolve returns the id of the conversion called name; it may call the platform, and
	// CompileMappings calls it once per destination and name. Nil compiles offline: a name
	// is only checked to be allowed, and stays unresolved.
	Resolve func(name string) (id string, err error)
	// API names the platform's API in messages ("the Meta Conversions API"); "" = Platform.
	API string
}

// retractSuffix is appended to a rule's name to key its retraction rows. Rule names cannot
// contain ':', so no rule's conversion key can equal another rule's retraction key.
const retractSuffix = ":retract"

var (
	ruleNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	digitsPattern   = regexp.MustCompile(`^[0-9]{1,20}$`)
)

// MappingError is one problem found in the mapping rules. CompileMappings returns every
// MappingError it finds joined with errors.Join; use errors.As to get at one.
type MappingError struct {
	Index   int    // position of the rule in the mappings list
	Rule    string // the rule's name, "" when it has none
	Field   string // the field's path inside the rule, e.g. "destinations[0].destination"
	Problem string // what is wrong, never a raw email or phone
}

func (e *MappingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mappings[%d]", e.Index)
	if e.Rule != "" {
		fmt.Fprintf(&b, " (%s)", e.Rule)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	return b.String()
}

// Mapping is a validated, compiled set of mapping rules. It is immutable and safe for
// concurrent use. A nil *Mapping matches nothing.
type Mapping struct {
	rules   []compiledRule
	version string
}

type compiledRule struct {
	rule  MappingRule
	dests []compiledDest
}

type compiledDest struct {
	name       string
	platform   string
	target     Target
	conversion string
	value      *ValueRule // the rule's or the destination's own; nil = no value
	convName   string     // the name the mapping gave, resolved into conversion; "" = given as id
}

// CompileMappings validates rules against the configured destinations (name → target)
// and compiles them. On failure the error joins one *MappingError per problem, in rule
// order, so sales ops see everything wrong with a file at once.
func CompileMappings(rules []MappingRule, destinations map[string]Target) (*Mapping, error) {
	var errs []error
	seen := make(map[string]int, len(rules))
	m := &Mapping{rules: make([]compiledRule, 0, len(rules))}
	names := map[[2]string]resolved{}
	for i, r := range rules {
		r.Destinations = append([]RuleDestination(nil), r.Destinations...) // names resolve into the copy
		v := ruleValidator{index: i, rule: r.Name, names: names}
		v.name(r.Name, seen)
		v.match(r.Match)
		v.value("value", r.Value)
		v.retract(r)
		cr := compiledRule{rule: r}
		cr.dests = v.destinations(r, destinations)
		v.restate(r, cr.dests)
		errs = append(errs, v.errs...)
		m.rules = append(m.rules, cr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	version, err := mappingVersion(m.Rules())
	if err != nil {
		return nil, err
	}
	m.version = version
	return m, nil
}

// mappingVersion is the first 12 hex digits of the SHA-256 of the rules' canonical YAML:
// key order, comments, flow or block style and scalar-or-list spellings do not change it.
func mappingVersion(rules []MappingRule) (string, error) {
	if rules == nil {
		rules = []MappingRule{}
	}
	canonical, err := yaml.Marshal(rules)
	if err != nil {
		return "", fmt.Errorf("mappings: canonical form: %w", err)
	}
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])[:12], nil
}

// Version identifies the content of the rules that made this mapping. Every Planned
// carries it, so each conversion records the mapping version that produced it.
func (m *Mapping) Version() string {
	if m == nil {
		return ""
	}
	return m.version
}

// Rules returns a copy of the rules, in file order.
func (m *Mapping) Rules() []MappingRule {
	if m == nil {
		return nil
	}
	out := make([]MappingRule, len(m.rules))
	for i, r := range m.rules {
		out[i] = r.rule
	}
	return out
}

type ruleValidator struct {
	index int
	rule  string
	names map[[2]string]resolved // conversion names resolved in this compile
	errs  []error
}

func (v *ruleValidator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &MappingError{Index: v.index, Rule: v.rule, Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (v *ruleValidator) name(name string, seen map[string]int) {
	switch {
	case name == "":
		v.add("name", "required")
		return
	case !ruleNamePattern.MatchString(name):
		v.add("name", "%q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if first, ok := seen[name]; ok {
		v.add("name", "duplicate rule name %q (also mappings[%d])", name, first)
		return
	}
	seen[name] = v.index
}

func (v *ruleValidator) match(m RuleMatch) {
	if strings.TrimSpace(m.Source) == "" && strings.TrimSpace(m.ObjectType) == "" && strings.TrimSpace(m.Pipeline) == "" &&
		len(m.Stage) == 0 && len(m.Status) == 0 {
		v.add("match", "needs at least one of source, object_type, pipeline, stage, status")
		return
	}
	if m.ObjectType != "" {
		switch fold(m.ObjectType) {
		case ObjectDeal, ObjectOpportunity, ObjectLead, ObjectContact:
		default:
			v.add("match.object_type", "%q must be one of deal, opportunity, lead, contact", m.ObjectType)
		}
	}
	v.stages("match.stage", m.Stage)
	v.statuses("match.status", m.Status)
}

func (v *ruleValidator) stages(field string, stages MappingStrings) {
	seen := map[string]bool{}
	for i, s := range stages {
		switch {
		case strings.TrimSpace(s) == "":
			v.add(fmt.Sprintf("%s[%d]", field, i), "empty stage")
		case seen[fold(s)]:
			v.add(fmt.Sprintf("%s[%d]", field, i), "%q is listed twice", s)
		}
		seen[fold(s)] = true
	}
}

func (v *ruleValidator) statuses(field string, statuses MappingStrings) {
	for i, s := range statuses {
		switch fold(s) {
		case StatusOpen, StatusWon, StatusLost:
		default:
			v.add(fmt.Sprintf("%s[%d]", field, i), "%q must be one of open, won, lost", s)
		}
	}
}

func (v *ruleValidator) retract(r MappingRule) {
	ro := r.RetractOn
	if ro == nil {
		return
	}
	if len(ro.Stage) == 0 && len(ro.Status) == 0 {
		v.add("retract_on", "needs stage or status")
		return
	}
	v.stages("retract_on.stage", ro.Stage)
	v.statuses("retract_on.status", ro.Status)
	if len(r.Match.Stage) == 0 && len(r.Match.Status) == 0 {
		v.add("retract_on", "match has no stage or status, so every retracting change would also match; add match.stage or match.status")
		return
	}
	for i, s := range ro.Stage {
		if r.Match.Stage.has(s) {
			v.add(fmt.Sprintf("retract_on.stage[%d]", i), "%q is also in match.stage; a stage cannot both make and retract the conversion", s)
		}
	}
	for i, s := range ro.Status {
		if r.Match.Status.has(s) {
			v.add(fmt.Sprintf("retract_on.status[%d]", i), "%q is also in match.status; a status cannot both make and retract the conversion", s)
		}
	}
}

func (v *ruleValidator) value(field string, vr *ValueRule) {
	if vr == nil {
		return
	}
	hasField := vr.Field != ""
	if hasField && vr.Fixed != nil {
		v.add(field, "field and fixed are exclusive; set one")
	}
	if hasField {
		if _, ok := valuePath(vr.Field, "amount"); !ok {
			v.add(field+".field", "%q must be \"amount\" or \"properties.<name>\"", vr.Field)
		}
	}
	if vr.Fixed != nil && vr.Fixed.IsNegative() {
		v.add(field+".fixed", "must not be negative, got %s", vr.Fixed.String())
	}
	if vr.Multiplier != nil {
		switch {
		case !vr.Multiplier.IsPositive():
			v.add(field+".multiplier", "must be greater than 0, got %s", vr.Multiplier.String())
		case !hasField && vr.Fixed == nil:
			v.add(field+".multiplier", "needs value.field or value.fixed to multiply")
		}
	}
	if vr.CurrencyField != "" {
		if _, ok := valuePath(vr.CurrencyField, "currency"); !ok {
			v.add(field+".currency_field", "%q must be \"currency\" or \"properties.<name>\"", vr.CurrencyField)
		}
	}
	if vr.DefaultCurrency != "" && !ValidCurrency(vr.DefaultCurrency) {
		v.add(field+".default_currency", "%q is not an ISO 4217 currency code (3 upper-case letters, e.g. USD)", vr.DefaultCurrency)
	}
	if vr.Fixed != nil && vr.CurrencyField == "" && vr.DefaultCurrency == "" {
		v.add(field+".default_currency", "required with value.fixed (or set value.currency_field)")
	}
	if !hasField && vr.Fixed == nil && (vr.CurrencyField != "" || vr.DefaultCurrency != "") && vr.Multiplier == nil {
		v.add(field, "currency set without value.field or value.fixed")
	}
}

func (v *ruleValidator) destinations(r MappingRule, platforms map[string]Target) []compiledDest {
	if len(r.Destinations) == 0 {
		v.add("destinations", "needs at least one destination")
		return nil
	}
	known := make([]string, 0, len(platforms))
	for name := range platforms {
		known = append(known, name)
	}
	sort.Strings(known)
	seen := map[string]int{}
	out := make([]compiledDest, 0, len(r.Destinations))
	for i, d := range r.Destinations {
		field := fmt.Sprintf("destinations[%d]", i)
		target, ok := platforms[d.Destination]
		switch {
		case d.Destination == "":
			v.add(field+".destination", "required")
		case !ok:
			v.add(field+".destination", "unknown destination %q (configured: %s)", d.Destination, listOrNone(known))
		}
		if first, dup := seen[d.Destination]; dup && d.Destination != "" {
			v.add(field+".destination", "%q is listed twice in this rule (also destinations[%d]); one rule sends once per destination", d.Destination, first)
		} else {
			seen[d.Destination] = i
		}
		v.resolveConversion(field+".conversion", &r.Destinations[i], target, v.names)
		if d = r.Destinations[i]; d.ConversionName == "" || d.Conversion != "" {
			v.conversion(field+".conversion", d.Conversion, target)
		}
		v.value(field+".value", d.Value)
		value := r.Value
		if d.Value != nil {
			value = d.Value
		}
		out = append(out, compiledDest{name: d.Destination, platform: target.Platform, target: target, conversion: d.Conversion, value: value, convName: d.ConversionName})
	}
	return out
}

func (v *ruleValidator) conversion(field, conv string, t Target) {
	if conv == "" {
		v.add(field, "required")
		return
	}
	if t.Check != nil {
		if err := t.Check(conv); err != nil {
			hint := ""
			if strings.Contains(conv, "/") {
				hint = " (only the id after the last /)"
			}
			v.add(field, "%s%s", err.Error(), hint)
		}
		return
	}
	if strings.TrimSpace(conv) != conv {
		v.add(field, "%q has leading or trailing spaces", conv)
	}
	if strings.IndexFunc(conv, unicode.IsControl) >= 0 {
		v.add(field, "contains control characters")
	}
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// valuePath checks a value or currency field reference: the top-level name (amount or
// currency) or "properties.<name>". It returns the property name ("" for the top level).
func valuePath(ref, top string) (property string, ok bool) {
	if ref == top {
		return "", true
	}
	name, found := strings.CutPrefix(ref, "properties.")
	if !found || strings.TrimSpace(name) == "" {
		return "", false
	}
	return name, true
}

// ValidCurrency reports whether code is an upper-case ISO 4217 currency code.
func ValidCurrency(code string) bool {
	if len(code) != 3 || strings.ToUpper(code) != code || code == "XXX" {
		return false
	}
	_, err := currency.ParseISO(code)
	return err == nil
}

// decimalString renders a decimal for summaries.
func decimalString(d *decimal.Decimal) string {
	if d == nil {
		return ""
	}
	return d.String()
}
