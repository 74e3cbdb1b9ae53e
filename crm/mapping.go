package crm

import (
	"fmt"
	"strings"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"
)

// MappingRule is one stage-mapping rule as sales ops write it under `mappings:` in the
// config file: which stage changes it matches, what value they carry, which later stage
// changes take the conversion back, and which destinations receive it.
//
//	mappings:
//	  - name: closed-won-deals
//	    match: {source: hubspot, object_type: deal, pipeline: default, stage: [closedwon]}
//	    value: {field: amount, multiplier: 0.3, default_currency: USD}
//	    retract_on: {stage: [closedlost]}
//	    restate_on: {amount_changed: true}
//	    destinations:
//	      - destination: google-main
//	        conversion: "987654321"
//
// A MappingRule is only data; CompileMappings validates a list of them and builds the
// Mapping that plans conversions.
type MappingRule struct {
	// Name identifies the rule in conversion keys, logs and reports. Renaming a rule
	// changes the keys of the conversions it makes, so a renamed rule uploads again.
	Name         string            `yaml:"name"`
	Match        RuleMatch         `yaml:"match"`
	Value        *ValueRule        `yaml:"value,omitempty"`
	RetractOn    *RuleRetract      `yaml:"retract_on,omitempty"`
	RestateOn    *RuleRestate      `yaml:"restate_on,omitempty"`
	Destinations []RuleDestination `yaml:"destinations"`
}

// RuleMatch says which stage changes a rule applies to. Every matcher that is set must fit
// (AND); a list matcher fits when any of its entries equals the stage change's value.
// Comparison ignores case and surrounding spaces. An unset matcher fits anything, but a
// rule must set at least one.
type RuleMatch struct {
	Source     string         `yaml:"source,omitempty"`      // hubspot | salesforce | pipedrive | a relay's name
	ObjectType string         `yaml:"object_type,omitempty"` // deal | opportunity | lead | contact
	Pipeline   string         `yaml:"pipeline,omitempty"`
	Stage      MappingStrings `yaml:"stage,omitempty"`  // stage ids or names, as the decoder reports them
	Status     MappingStrings `yaml:"status,omitempty"` // open | won | lost
}

// RuleRetract lists the later stages and statuses that take a rule's conversion back
// (closed-lost after closed-won). A stage change retracts when it fits the rule's source,
// object_type and pipeline matchers and its stage OR its status is listed here.
type RuleRetract struct {
	Stage  MappingStrings `yaml:"stage,omitempty"`
	Status MappingStrings `yaml:"status,omitempty"`
}

// RuleDestination sends a rule's conversion to one configured destination.
type RuleDestination struct {
	// Destination is a key of the config's `destinations` map.
	Destination string `yaml:"destination"`
	// Conversion is what the platform calls the conversion: the Google conversion action
	// id (digits), the Meta or TikTok event name, the Microsoft goal name, the LinkedIn
	// conversion rule id (digits).
	Conversion string `yaml:"conversion"`
	// ConversionName is the conversion's name where the platform looks names up
	// (`conversion: {name: "Closed Won (CRM)"}`, see conversion_name.go); compiling resolves
	// it into Conversion.
	ConversionName string `yaml:"-"`
	// Value, when set, replaces the rule's value rule for this destination as a whole
	// (it is not merged field by field).
	Value *ValueRule `yaml:"value,omitempty"`
}

// ValueRule says what value a conversion carries. Field and Fixed are exclusive; with
// neither, the conversion has no value and the platform uses the action's default.
//
// Field is "amount" (the stage change's amount) or "properties.<name>" (a property of the
// stage change, parsed as a decimal). The value is Field's (or Fixed) times Multiplier
// (default 1), e.g. 0.3 to upload a margin rather than revenue.
//
// The currency is read from CurrencyField ("currency", the default when Field is set, or
// "properties.<name>"); when that is empty or not an ISO 4217 code, DefaultCurrency is used.
// A Fixed value uses DefaultCurrency unless CurrencyField is set.
type ValueRule struct {
	Field           string           `yaml:"field,omitempty"`
	Fixed           *decimal.Decimal `yaml:"fixed,omitempty"`
	Multiplier      *decimal.Decimal `yaml:"multiplier,omitempty"`
	CurrencyField   string           `yaml:"currency_field,omitempty"`
	DefaultCurrency string           `yaml:"default_currency,omitempty"`
}

// MappingStrings is a matcher's list of accepted values. In YAML it is either one scalar
// (`stage: closedwon`) or a sequence (`stage: [closedwon, contractsigned]`).
type MappingStrings []string

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (m *MappingStrings) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*m = nil
			return nil
		}
		*m = MappingStrings{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(MappingStrings, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: expected a string, got a %s", c.Line, nodeKind(c))
			}
			out = append(out, c.Value)
		}
		*m = out
		return nil
	default:
		return fmt.Errorf("line %d: expected a string or a list of strings, got a %s", n.Line, nodeKind(n))
	}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	default:
		return "scalar"
	}
}

// has reports whether v is one of m's entries, ignoring case and surrounding spaces.
func (m MappingStrings) has(v string) bool {
	v = strings.TrimSpace(v)
	for _, s := range m {
		if strings.EqualFold(strings.TrimSpace(s), v) {
			return true
		}
	}
	return false
}

// fold returns the comparison form of a matcher value.
func fold(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
