package crm_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/crm"
)

func TestConversionByNameDecodesAndResolvesOncePerCompile(t *testing.T) {
	t.Parallel()
	var rules []crm.MappingRule
	require.NoError(t, yaml.Unmarshal([]byte(`
- name: won
  match: {stage: closedwon}
  destinations:
    - {destination: ads, conversion: {name: "Closed Won (CRM)"}}
    - {destination: meta, conversion: Purchase}
- name: won-again
  match: {stage: contractsigned}
  destinations:
    - {destination: ads, conversion: {name: "Closed Won (CRM)"}}
`), &rules))
	require.Equal(t, "Closed Won (CRM)", rules[0].Destinations[0].ConversionName)
	require.Empty(t, rules[0].Destinations[0].Conversion)
	require.Equal(t, "Purchase", rules[0].Destinations[1].Conversion, "the plain string form still works")

	ids := map[string]string{"Closed Won (CRM)": "777"}
	calls := 0
	targets := map[string]crm.Target{
		"ads": {Platform: "google_ads", Noun: "conversion action", ResolvesNames: true, Resolve: func(name string) (string, error) {
			calls++
			if id, ok := ids[name]; ok {
				return id, nil
			}
			return "", errors.New("no conversion action named " + name)
		}},
		"meta": {Platform: "meta", Noun: "event"},
	}
	m, err := crm.CompileMappings(rules, targets)
	require.NoError(t, err)
	require.Equal(t, 1, calls, "one lookup per destination and name per compile")
	require.Equal(t, "777", m.Rules()[0].Destinations[0].Conversion)
	require.Equal(t, "777", m.Rules()[1].Destinations[0].Conversion)
	require.Empty(t, rules[0].Destinations[0].Conversion, "the caller's rules are not changed")
	require.Contains(t, m.Summary(), `conversion action 777 (name "Closed Won (CRM)")`)

	// A reload compiles again and looks the name up again: an id changed behind the name is picked up.
	ids["Closed Won (CRM)"] = "778"
	m2, err := crm.CompileMappings(rules, targets)
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	require.Equal(t, "778", m2.Rules()[0].Destinations[0].Conversion)
	require.NotEqual(t, m.Version(), m2.Version(), "the mapping version follows the resolved id")

	// Offline (no Resolve) a name is allowed where the platform resolves names, and stays unresolved.
	offline := map[string]crm.Target{"ads": {Platform: "google_ads", Noun: "conversion action", ResolvesNames: true}, "meta": targets["meta"]}
	_, err = crm.CompileMappings(rules, offline)
	require.NoError(t, err)

	delete(ids, "Closed Won (CRM)")
	_, err = crm.CompileMappings(rules, targets)
	require.ErrorContains(t, err, "mappings[0] (won): destinations[0].conversion: no conversion action named Closed Won (CRM)")
}

func TestConversionByNameYAMLErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{"- {destination: ads, conversion: {id: 1}}", "line 1: conversion: a mapping here holds only name"},
		{"- {destination: ads, conversion: {}}", "needs a name"},
		{"- {destination: ads, conversion: [a]}", "expected an id or event name, or {name: ...}, got a list"},
		{"- {destination: ads, conversoin: x}", "line 1: field conversoin not found in type crm.RuleDestination"},
		{"- {destination: ads, conversion: x, value: {feild: amount}}", "line 1: field feild not found in type crm.ValueRule"},
	} {
		var ds []crm.RuleDestination
		require.ErrorContains(t, yaml.Unmarshal([]byte(tc.doc), &ds), tc.want, tc.doc)
	}
}
