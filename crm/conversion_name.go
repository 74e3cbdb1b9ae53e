package crm

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// A mapping destination names its conversion either as the platform's id or event name
// (`conversion: "987654321"`) or, where the platform can look names up (Google Ads
// conversion actions, Microsoft goals), by its name as sales ops see it in the ad platform:
//
//	conversion: {name: "Closed Won (CRM)"}
//
// A name is resolved to the id by Target.Resolve when the mapping compiles (at start and on
// every reload); the compiled Mapping keeps the id (its Rules carry both), so nothing is
// looked up per conversion.

// ruleDestinationKeys are the YAML keys of a RuleDestination and of its value rule.
var (
	ruleDestinationKeys = yamlTagKeys(reflect.TypeOf(RuleDestination{}))
	valueRuleKeys       = yamlTagKeys(reflect.TypeOf(ValueRule{}))
)

func yamlTagKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// ruleDestinationYAML is RuleDestination without its methods, for decoding.
type ruleDestinationYAML struct {
	Destination string     `yaml:"destination"`
	Conversion  yaml.Node  `yaml:"conversion"`
	Value       *ValueRule `yaml:"value,omitempty"`
}

// UnmarshalYAML reads `conversion` as a string or as {name: ...}; every other key is read
// as declared, and unknown keys are errors with their line, as a strict decoder reports them.
func (d *RuleDestination) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a destination must be a mapping, got a %s", n.Line, nodeKind(n))}}
	}
	var unknown []string
	unknownKeys := func(m *yaml.Node, keys map[string]bool, typ string) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k := m.Content[i]; !keys[k.Value] {
				unknown = append(unknown, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, typ))
			}
		}
	}
	unknownKeys(n, ruleDestinationKeys, "crm.RuleDestination")
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "value" && n.Content[i+1].Kind == yaml.MappingNode {
			unknownKeys(n.Content[i+1], valueRuleKeys, "crm.ValueRule")
		}
	}
	if len(unknown) > 0 {
		return &yaml.TypeError{Errors: unknown}
	}
	var raw ruleDestinationYAML
	if err := n.Decode(&raw); err != nil {
		return err
	}
	out := RuleDestination{Destination: raw.Destination, Value: raw.Value}
	switch c := raw.Conversion; c.Kind {
	case 0:
	case yaml.ScalarNode:
		if c.Tag != "!!null" {
			out.Conversion = c.Value
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(c.Content); i += 2 {
			k, v := c.Content[i], c.Content[i+1]
			if k.Value != "name" || v.Kind != yaml.ScalarNode {
				return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: conversion: a mapping here holds only name (the conversion action's name), got %s", k.Line, k.Value)}}
			}
			out.ConversionName = v.Value
		}
		if out.ConversionName == "" {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: conversion: {name: ...} needs a name", c.Line)}}
		}
	default:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: conversion: expected an id or event name, or {name: ...}, got a %s", c.Line, nodeKind(&c))}}
	}
	*d = out
	return nil
}

// MarshalYAML writes the form UnmarshalYAML reads; a resolved name also writes its id
// (so the mapping version changes when the id behind a name does).
func (d RuleDestination) MarshalYAML() (any, error) {
	type plain struct {
		Destination string     `yaml:"destination"`
		Conversion  string     `yaml:"conversion"`
		Value       *ValueRule `yaml:"value,omitempty"`
	}
	if d.ConversionName == "" {
		return plain{Destination: d.Destination, Conversion: d.Conversion, Value: d.Value}, nil
	}
	type named struct {
		Name string `yaml:"name"`
		ID   string `yaml:"id,omitempty"`
	}
	return struct {
		Destination string     `yaml:"destination"`
		Conversion  named      `yaml:"conversion"`
		Value       *ValueRule `yaml:"value,omitempty"`
	}{d.Destination, named{d.ConversionName, d.Conversion}, d.Value}, nil
}

// resolveConversion fills dest.Conversion from its name with t.Resolve; cache holds the
// answers of this compile. Without a name it does nothing. Offline (t.Resolve nil) a
// name is only checked to be one the platform can resolve; the compiled conversion stays
// empty.
func (v *ruleValidator) resolveConversion(field string, dest *RuleDestination, t Target, cache map[[2]string]resolved) {
	if dest.ConversionName == "" {
		return
	}
	name := dest.ConversionName
	switch {
	case dest.Conversion != "":
		v.add(field, "give the %s or {name: ...}, not both", noun(t))
		return
	case !t.ResolvesNames:
		v.add(field, "%s does not look up conversions by name; give the %s itself", t.Platform, noun(t))
		return
	case strings.TrimSpace(name) != name:
		v.add(field, "name %q has leading or trailing spaces", name)
		return
	case t.Resolve == nil:
		return
	}
	key := [2]string{dest.Destination, name}
	r, ok := cache[key]
	if !ok {
		r.id, r.err = t.Resolve(name)
		cache[key] = r
	}
	if r.err != nil {
		v.add(field, "%s", r.err.Error())
		return
	}
	dest.Conversion = r.id
}

type resolved struct {
	id  string
	err error
}

func noun(t Target) string {
	if t.Noun == "" || t.Noun == "event" {
		return "event name"
	}
	return t.Noun + " id"
}

// namedSummary is what `mappings check` adds for a conversion given by name.
func namedSummary(name, id string) string {
	switch {
	case name == "":
		return ""
	case id == "":
		return fmt.Sprintf("(name %q, not resolved offline)", name)
	}
	return fmt.Sprintf(" (name %q)", name)
}
