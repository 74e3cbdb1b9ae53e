package crm

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRestateOnValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rule string
		want string
	}{
		{"valid", "match: {stage: won}\n    value: {field: amount}\n    restate_on: {amount_changed: true}", ""},
		{"false", "match: {stage: won}\n    value: {field: amount}\n    restate_on: {amount_changed: false}",
			`mappings[0] (r): restate_on.amount_changed: must be true (the only restatement trigger); remove restate_on to never restate`},
		{"empty", "match: {stage: won}\n    value: {field: amount}\n    restate_on: {}",
			`mappings[0] (r): restate_on.amount_changed: must be true (the only restatement trigger); remove restate_on to never restate`},
		{"fixed value", "match: {stage: won}\n    value: {fixed: 5, default_currency: EUR}\n    restate_on: {amount_changed: true}",
			`mappings[0] (r): restate_on: value of destination "google-main" is not read from a field (value.field), so its amount never changes`},
		{"no value", "match: {stage: won}\n    restate_on: {amount_changed: true}",
			`mappings[0] (r): restate_on: value of destination "google-main" is not read from a field (value.field), so its amount never changes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rules, err := parseMappingRules(t, "mappings:\n  - name: r\n    "+tt.rule+"\n    destinations: [{destination: google-main, conversion: \"1\"}]\n")
			require.NoError(t, err)
			_, err = CompileMappings(rules, testPlatforms)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
		})
	}
	_, err := parseMappingRules(t, "mappings:\n  - name: r\n    match: {stage: won}\n    restate_on: {amount_changes: true}\n    destinations: [{destination: google-main, conversion: \"1\"}]\n")
	require.ErrorContains(t, err, "amount_changes", "restate_on is decoded strictly")

	rules, err := parseMappingRules(t, "mappings:\n  - name: r\n    match: {stage: won}\n    restate_on: {amount_changed: true}\n"+
		"    destinations: [{destination: google-main, conversion: \"1\", value: {fixed: 1, default_currency: EUR}}, {destination: meta-main, conversion: Won, value: {field: amount}}]\n")
	require.NoError(t, err)
	_, err = CompileMappings(rules, testPlatforms)
	require.EqualError(t, err, `mappings[0] (r): restate_on: destinations[0].value of destination "google-main" is not read from a field (value.field), so its amount never changes`)
}

func TestRestateOnPlan(t *testing.T) {
	t.Parallel()
	platforms := map[string]Target{"google-main": {Platform: "google_ads", Restates: true, API: "the Google Ads API"}, "meta-main": {Platform: "meta", API: "the Meta Conversions API"}}
	rules, err := parseMappingRules(t, `mappings:
  - name: won
    match: {stage: won}
    value: {field: amount, default_currency: EUR}
    restate_on: {amount_changed: true}
    destinations: [{destination: google-main, conversion: "1"}, {destination: meta-main, conversion: Won}]
  - name: plain
    match: {stage: won}
    value: {field: amount, default_currency: EUR}
    destinations: [{destination: google-main, conversion: "2"}]
`)
	require.NoError(t, err)
	m, err := CompileMappings(rules, platforms)
	require.NoError(t, err)

	t1 := time.Date(2026, 11, 2, 9, 0, 0, 123456789, time.UTC)
	sc := StageChange{Source: "relay", ObjectType: ObjectDeal, ObjectID: "D-1", Stage: "won", OccurredAt: t1, Amount: dec("100")}
	planned, _ := m.Plan(sc)
	require.Len(t, planned, 3)
	require.Equal(t, RestateKey("relay", ObjectDeal, "D-1", "won", "google-main", t1), planned[0].RestateKey)
	require.NotEqual(t, planned[0].Key, planned[0].RestateKey)
	require.NotEqual(t, planned[0].RestateKey, planned[1].RestateKey, "one per destination")
	require.Empty(t, planned[2].RestateKey, "a rule without restate_on never restates")

	again, _ := m.Plan(sc)
	require.Equal(t, planned, again, "the same change keys the same restatement (replays)")
	sc.OccurredAt = t1.Add(time.Microsecond)
	later, _ := m.Plan(sc)
	require.NotEqual(t, planned[0].RestateKey, later[0].RestateKey, "a later change is another restatement")
	require.Equal(t, planned[0].Key, later[0].Key, "of the same conversion")

	sc.Amount = nil
	none, _ := m.Plan(sc)
	require.Empty(t, none[0].RestateKey, "no value, nothing to restate to")

	sum := m.Summary()
	require.Contains(t, sum, "restate on: amount changed")
	require.Contains(t, sum, "! restate_on has no effect on meta-main: the Meta Conversions API has no restatement (its restatement rows end skipped, restatement_unsupported)")
	require.NotContains(t, sum, "restate_on has no effect on google-main")
}
