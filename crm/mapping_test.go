package crm

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

var testPlatforms = map[string]Target{
	"google-main": {Platform: "google", Noun: "conversion action", Check: func(name string) error {
		if !digitsPattern.MatchString(name) {
			return fmt.Errorf("%q must be the numeric Google conversion action id", name)
		}
		return nil
	}},
	"meta-main":   {Platform: "meta"},
	"tiktok-main": {Platform: "tiktok"},
}

// parseMappingRules decodes a `mappings:` document strictly, as the config loader does.
func parseMappingRules(t *testing.T, doc string) ([]MappingRule, error) {
	t.Helper()
	var file struct {
		Mappings []MappingRule `yaml:"mappings"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	err := dec.Decode(&file)
	return file.Mappings, err
}

func compileFile(t *testing.T, name string) (*Mapping, error) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "mappings", name))
	require.NoError(t, err)
	rules, err := parseMappingRules(t, string(raw))
	require.NoError(t, err)
	return CompileMappings(rules, testPlatforms)
}

func dec(s string) *decimal.Decimal {
	d := decimal.RequireFromString(s)
	return &d
}

func TestMappingYAMLStrict(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"unknown rule key":  "mappings:\n  - name: a\n    matches: {stage: x}\n",
		"unknown match key": "mappings:\n  - name: a\n    match: {stages: x}\n",
		"unknown value key": "mappings:\n  - name: a\n    match: {stage: x}\n    value: {feild: amount}\n",
		"stage as mapping":  "mappings:\n  - name: a\n    match: {stage: {a: b}}\n",
		"nested list":       "mappings:\n  - name: a\n    match: {stage: [[a]]}\n",
		"bad decimal":       "mappings:\n  - name: a\n    match: {stage: x}\n    value: {fixed: lots}\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := parseMappingRules(t, doc)
			require.Error(t, err)
		})
	}
}

func TestMappingStringsScalarOrList(t *testing.T) {
	t.Parallel()
	rules, err := parseMappingRules(t, "mappings:\n  - name: a\n    match: {stage: closedwon, status: [won, lost]}\n")
	require.NoError(t, err)
	require.Equal(t, MappingStrings{"closedwon"}, rules[0].Match.Stage)
	require.Equal(t, MappingStrings{"won", "lost"}, rules[0].Match.Status)
}

func TestCompileMappingsReportsEveryProblem(t *testing.T) {
	t.Parallel()
	m, err := compileFile(t, "invalid.yaml")
	require.Nil(t, m)
	require.Error(t, err)
	want := []string{
		`mappings[0] (closed-won): match.stage[1]: "closedwon" is listed twice`,
		`mappings[0] (closed-won): match.status[0]: "winning" must be one of open, won, lost`,
		`mappings[0] (closed-won): value: field and fixed are exclusive; set one`,
		`mappings[0] (closed-won): value.multiplier: must be greater than 0, got -0.3`,
		`mappings[0] (closed-won): value.default_currency: "usd" is not an ISO 4217 currency code (3 upper-case letters, e.g. USD)`,
		`mappings[0] (closed-won): retract_on.stage[0]: "closedwon" is also in match.stage; a stage cannot both make and retract the conversion`,
		`mappings[0] (closed-won): destinations[0].destination: unknown destination "googel-main" (configured: google-main, meta-main, tiktok-main)`,
		`mappings[0] (closed-won): destinations[1].conversion: "customers/123/conversionActions/456" must be the numeric Google conversion action id (only the id after the last /)`,
		`mappings[0] (closed-won): destinations[2].destination: "google-main" is listed twice in this rule (also destinations[1]); one rule sends once per destination`,
		`mappings[1] (closed-won): name: duplicate rule name "closed-won" (also mappings[0])`,
		`mappings[1] (closed-won): match: needs at least one of source, object_type, pipeline, stage, status`,
		`mappings[1] (closed-won): destinations: needs at least one destination`,
		`mappings[2] (bad name!): name: "bad name!" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
		`mappings[2] (bad name!): match.object_type: "account" must be one of deal, opportunity, lead, contact`,
		`mappings[2] (bad name!): value.field: "amout" must be "amount" or "properties.<name>"`,
		`mappings[2] (bad name!): value.currency_field: "curr" must be "currency" or "properties.<name>"`,
		`mappings[2] (bad name!): destinations[0].conversion: " Closed Won" has leading or trailing spaces`,
		`mappings[2] (bad name!): destinations[0].value.fixed: must not be negative, got -5`,
		`mappings[2] (bad name!): destinations[0].value.default_currency: required with value.fixed (or set value.currency_field)`,
		`mappings[3]: name: required`,
		`mappings[3]: retract_on: needs stage or status`,
		`mappings[3]: destinations[0].destination: required`,
		`mappings[3]: destinations[0].conversion: required`,
	}
	require.Equal(t, strings.Join(want, "\n"), err.Error())

	var me *MappingError
	require.ErrorAs(t, err, &me)
	require.Equal(t, 0, me.Index)
	require.Equal(t, "closed-won", me.Rule)
	require.Equal(t, "match.stage[1]", me.Field)
}

func TestCompileMappingsValidation(t *testing.T) {
	t.Parallel()
	const dest = "    destinations: [{destination: google-main, conversion: \"1\"}]\n"
	tests := []struct {
		name string
		rule string // YAML of one rule's keys other than name and destinations
		dest string // destinations line; dest when empty
		want string // the one error expected; "" for none
	}{
		{"valid minimal", "match: {stage: won}", "", ""},
		{"empty match", "match: {}", "", `mappings[0] (r): match: needs at least one of source, object_type, pipeline, stage, status`},
		{"blank stage", "match: {stage: [\" \"]}", "", `mappings[0] (r): match.stage[0]: empty stage`},
		{"negative multiplier", "match: {stage: won}\n    value: {field: amount, multiplier: -1}", "", `mappings[0] (r): value.multiplier: must be greater than 0, got -1`},
		{"zero multiplier", "match: {stage: won}\n    value: {field: amount, multiplier: 0}", "", `mappings[0] (r): value.multiplier: must be greater than 0, got 0`},
		{"multiplier alone", "match: {stage: won}\n    value: {multiplier: 2}", "", `mappings[0] (r): value.multiplier: needs value.field or value.fixed to multiply`},
		{"currency alone", "match: {stage: won}\n    value: {default_currency: USD}", "", `mappings[0] (r): value: currency set without value.field or value.fixed`},
		{"unknown currency", "match: {stage: won}\n    value: {field: amount, default_currency: ABC}", "", `mappings[0] (r): value.default_currency: "ABC" is not an ISO 4217 currency code (3 upper-case letters, e.g. USD)`},
		{"long currency", "match: {stage: won}\n    value: {field: amount, default_currency: EURO}", "", `mappings[0] (r): value.default_currency: "EURO" is not an ISO 4217 currency code (3 upper-case letters, e.g. USD)`},
		{"no-currency code", "match: {stage: won}\n    value: {field: amount, default_currency: XXX}", "", `mappings[0] (r): value.default_currency: "XXX" is not an ISO 4217 currency code (3 upper-case letters, e.g. USD)`},
		{"fixed with currency field", "match: {stage: won}\n    value: {fixed: 5, currency_field: currency}", "", ""},
		{"empty property", "match: {stage: won}\n    value: {field: properties.}", "", `mappings[0] (r): value.field: "properties." must be "amount" or "properties.<name>"`},
		{"retract overlaps status", "match: {status: won}\n    retract_on: {status: [Won]}", "", `mappings[0] (r): retract_on.status[0]: "Won" is also in match.status; a status cannot both make and retract the conversion`},
		{"retract without stage match", "match: {source: hubspot}\n    retract_on: {stage: [lost]}", "", `mappings[0] (r): retract_on: match has no stage or status, so every retracting change would also match; add match.stage or match.status`},
		{"retract bad status", "match: {stage: won}\n    retract_on: {status: [cancelled]}", "", `mappings[0] (r): retract_on.status[0]: "cancelled" must be one of open, won, lost`},
		{"google non-digit", "match: {stage: won}", "    destinations: [{destination: google-main, conversion: purchase}]\n", `mappings[0] (r): destinations[0].conversion: "purchase" must be the numeric Google conversion action id`},
		{"meta event name", "match: {stage: won}", "    destinations: [{destination: meta-main, conversion: Closed Won}]\n", ""},
		{"tiktok control char", "match: {stage: won}", "    destinations: [{destination: tiktok-main, conversion: \"Won\\tDeal\"}]\n", `mappings[0] (r): destinations[0].conversion: contains control characters`},
		{"rule name with colon", "match: {stage: won}", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name := "r"
			if tt.name == "rule name with colon" {
				name = "r:retract"
				tt.want = `mappings[0] (r:retract): name: "r:retract" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`
			}
			d := tt.dest
			if d == "" {
				d = dest
			}
			rules, err := parseMappingRules(t, "mappings:\n  - name: "+name+"\n    "+tt.rule+"\n"+d)
			require.NoError(t, err)
			m, err := CompileMappings(rules, testPlatforms)
			if tt.want == "" {
				require.NoError(t, err)
				require.NotNil(t, m)
				return
			}
			require.EqualError(t, err, tt.want)
			require.Nil(t, m)
		})
	}
}

func TestMappingPlanMatching(t *testing.T) {
	t.Parallel()
	m, err := compileFile(t, "valid.yaml")
	require.NoError(t, err)

	at := time.Date(2026, 10, 14, 13, 2, 11, 0, time.UTC)
	hubspotDeal := func(mut func(*StageChange)) StageChange {
		sc := StageChange{Source: "hubspot", ObjectType: ObjectDeal, ObjectID: "8841", Pipeline: "default",
			Stage: "closedwon", OccurredAt: at, Amount: dec("12500"), Currency: "EUR"}
		if mut != nil {
			mut(&sc)
		}
		return sc
	}
	type want struct{ rule, dest string }
	tests := []struct {
		name      string
		sc        StageChange
		want      []want
		retract   bool
		unmatched bool
	}{
		{"hubspot closed won", hubspotDeal(nil), []want{{"closed-won-deals", "google-main"}, {"closed-won-deals", "meta-main"}}, false, false},
		{"case and spaces ignored", hubspotDeal(func(s *StageChange) { s.Stage = " ClosedWon "; s.Source = "HubSpot" }), []want{{"closed-won-deals", "google-main"}, {"closed-won-deals", "meta-main"}}, false, false},
		{"other pipeline", hubspotDeal(func(s *StageChange) { s.Pipeline = "renewals" }), nil, false, true},
		{"other stage", hubspotDeal(func(s *StageChange) { s.Stage = "appointmentscheduled" }), nil, false, true},
		{"other object type", hubspotDeal(func(s *StageChange) { s.ObjectType = ObjectContact }), nil, false, true},
		{"other source", hubspotDeal(func(s *StageChange) { s.Source = "salesforce" }), nil, false, true},
		{"closed lost retracts", hubspotDeal(func(s *StageChange) { s.Stage = "closedlost" }), []want{{"closed-won-deals", "google-main"}, {"closed-won-deals", "meta-main"}}, true, false},
		{"lost status retracts", hubspotDeal(func(s *StageChange) { s.Stage = "contractsent"; s.Status = "lost" }), []want{{"closed-won-deals", "google-main"}, {"closed-won-deals", "meta-main"}}, true, false},
		{"retract bounded by pipeline", hubspotDeal(func(s *StageChange) { s.Stage = "closedlost"; s.Pipeline = "renewals" }), nil, false, true},
		{"won stage but lost status retracts", hubspotDeal(func(s *StageChange) { s.Status = "lost" }), []want{{"closed-won-deals", "google-main"}, {"closed-won-deals", "meta-main"}}, true, false},
		{"salesforce lead stage name", StageChange{Source: "salesforce", ObjectType: ObjectLead, ObjectID: "00Q1", Stage: "sales qualified", OccurredAt: at}, []want{{"sql-leads", "tiktok-main"}}, false, false},
		{"pipedrive won status any stage", StageChange{Source: "pipedrive", ObjectType: ObjectDeal, ObjectID: "7", Stage: "5", Status: StatusWon, OccurredAt: at}, []want{{"won-by-status", "google-main"}}, false, false},
		{"pipedrive open status", StageChange{Source: "pipedrive", ObjectType: ObjectDeal, ObjectID: "7", Stage: "5", Status: StatusOpen, OccurredAt: at}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			planned, unmatched := m.Plan(tt.sc)
			require.Equal(t, tt.unmatched, unmatched)
			got := make([]want, 0, len(planned))
			for _, p := range planned {
				got = append(got, want{p.Rule, p.Destination})
				require.Equal(t, tt.retract, p.Retract)
				require.Equal(t, m.Version(), p.MappingVersion)
				require.Equal(t, tt.sc.OccurredAt, p.OccurredAt)
				require.Equal(t, testPlatforms[p.Destination].Platform, p.Platform)
				if p.Retract {
					require.Nil(t, p.Value)
					require.Equal(t, ConversionKey(tt.sc.Source, tt.sc.ObjectType, tt.sc.ObjectID, p.Rule, p.Destination), p.RetractsKey)
					require.NotEqual(t, p.RetractsKey, p.Key)
				} else {
					require.Equal(t, ConversionKey(tt.sc.Source, tt.sc.ObjectType, tt.sc.ObjectID, p.Rule, p.Destination), p.Key)
					require.Empty(t, p.RetractsKey)
				}
			}
			if len(tt.want) == 0 {
				require.Empty(t, planned)
				return
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestMappingRetractionKeyIsStableAndDistinct(t *testing.T) {
	t.Parallel()
	m, err := compileFile(t, "valid.yaml")
	require.NoError(t, err)
	won := StageChange{Source: "hubspot", ObjectType: ObjectDeal, ObjectID: "8841", Pipeline: "default", Stage: "closedwon"}
	lost := won
	lost.Stage = "closedlost"
	lostAgain := lost
	lostAgain.OccurredAt = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

	pw, _ := m.Plan(won)
	pl, _ := m.Plan(lost)
	pl2, _ := m.Plan(lostAgain)
	require.Len(t, pl, len(pw))
	keys := map[string]bool{}
	for i := range pw {
		require.Equal(t, pw[i].Key, pl[i].RetractsKey)
		require.Equal(t, pl[i].Key, pl2[i].Key, "a redelivered retraction keeps its key")
		keys[pw[i].Key], keys[pl[i].Key] = true, true
	}
	require.Len(t, keys, 2*len(pw), "conversion and retraction keys never collide")
}

func TestMappingPlanValues(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 10, 14, 13, 2, 11, 0, time.UTC)
	tests := []struct {
		name     string
		value    string // the rule's value YAML; "" for none
		sc       StageChange
		value0   string // expected value; "" for nil
		currency string
		reason   string
	}{
		{"no value rule", "", StageChange{Amount: dec("10"), Currency: "EUR"}, "", "", ""},
		{"amount as is", "{field: amount}", StageChange{Amount: dec("12500.50"), Currency: "EUR"}, "12500.5", "EUR", ""},
		{"amount times margin", "{field: amount, multiplier: 0.3}", StageChange{Amount: dec("12500"), Currency: "EUR"}, "3750", "EUR", ""},
		{"exact decimal arithmetic", "{field: amount, multiplier: 0.1}", StageChange{Amount: dec("0.3"), Currency: "USD"}, "0.03", "USD", ""},
		{"lowercase payload currency", "{field: amount}", StageChange{Amount: dec("1"), Currency: "eur"}, "1", "EUR", ""},
		{"default currency when payload has none", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7")}, "7", "USD", ""},
		{"payload currency wins over default", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7"), Currency: "GBP"}, "7", "GBP", ""},
		{"no currency anywhere", "{field: amount}", StageChange{Amount: dec("7")}, "7", "", ValueReasonCurrencyMissing},
		{"missing amount", "{field: amount, default_currency: USD}", StageChange{Currency: "EUR"}, "", "", ValueReasonFieldMissing},
		{"property value", "{field: properties.margin, default_currency: USD}", StageChange{Properties: map[string]string{"margin": " 420.10 "}}, "420.1", "USD", ""},
		{"property missing", "{field: properties.margin, default_currency: USD}", StageChange{Properties: map[string]string{"other": "1"}}, "", "", ValueReasonFieldMissing},
		{"property not a number", "{field: properties.margin, default_currency: USD}", StageChange{Properties: map[string]string{"margin": "1,200"}}, "", "", ValueReasonFieldInvalid},
		{"property currency field", "{field: properties.margin, currency_field: properties.cur, default_currency: USD}", StageChange{Currency: "EUR", Properties: map[string]string{"margin": "5", "cur": "JPY"}}, "5", "JPY", ""},
		{"fixed value uses default currency, not payload's", "{fixed: 100, default_currency: USD}", StageChange{Amount: dec("999"), Currency: "EUR"}, "100", "USD", ""},
		{"fixed times multiplier", "{fixed: 100, multiplier: 1.5, default_currency: USD}", StageChange{}, "150", "USD", ""},
		{"fixed zero", "{fixed: 0, default_currency: USD}", StageChange{}, "0", "USD", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := "mappings:\n  - name: r\n    match: {stage: won}\n"
			if tt.value != "" {
				doc += "    value: " + tt.value + "\n"
			}
			doc += "    destinations: [{destination: meta-main, conversion: Won}]\n"
			rules, err := parseMappingRules(t, doc)
			require.NoError(t, err)
			m, err := CompileMappings(rules, testPlatforms)
			require.NoError(t, err)
			sc := tt.sc
			sc.Source, sc.ObjectType, sc.ObjectID, sc.Stage, sc.OccurredAt = "hubspot", ObjectDeal, "1", "won", at
			planned, unmatched := m.Plan(sc)
			require.False(t, unmatched)
			require.Len(t, planned, 1)
			p := planned[0]
			if tt.value0 == "" {
				require.Nil(t, p.Value)
			} else {
				require.NotNil(t, p.Value)
				require.True(t, decimal.RequireFromString(tt.value0).Equal(*p.Value), "value %s, want %s", p.Value, tt.value0)
			}
			require.Equal(t, tt.currency, p.Currency)
			require.Equal(t, tt.reason, p.ValueReason)
		})
	}
}

// TestMappingPlanInvalidCurrency: a currency that is present but not ISO 4217 makes the
// conversion rejected (invalid_currency, naming the field); default_currency fills only a
// missing one.
func TestMappingPlanInvalidCurrency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		value    string
		sc       StageChange
		field    string // the field named as invalid; "" when the conversion is not rejected
		currency string
	}{
		{"unknown code with a default", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7"), Currency: "ABC"}, "currency", ""},
		{"the no-currency code", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7"), Currency: "XXX"}, "currency", ""},
		{"not a code at all", "{field: amount}", StageChange{Amount: dec("7"), Currency: "dollars"}, "currency", ""},
		{"property currency", "{field: properties.margin, currency_field: properties.cur, default_currency: USD}",
			StageChange{Currency: "EUR", Properties: map[string]string{"margin": "5", "cur": "US$"}}, "properties.cur", ""},
		{"fixed value reading a currency field", "{fixed: 10, currency_field: properties.cur}", StageChange{Properties: map[string]string{"cur": "EURO"}}, "properties.cur", ""},
		{"blank currency is missing, the default fills it", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7"), Currency: "  "}, "", "USD"},
		{"valid lower-case code", "{field: amount, default_currency: USD}", StageChange{Amount: dec("7"), Currency: "jpy"}, "", "JPY"},
		{"no value, no verdict on the currency", "{field: amount, default_currency: USD}", StageChange{Currency: "ABC"}, "", ""},
		{"fixed value ignores the payload's currency", "{fixed: 10, default_currency: USD}", StageChange{Currency: "ABC"}, "", "USD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := "mappings:\n  - name: r\n    match: {stage: won}\n    value: " + tt.value + "\n" +
				"    destinations: [{destination: meta-main, conversion: Won}]\n"
			rules, err := parseMappingRules(t, doc)
			require.NoError(t, err)
			m, err := CompileMappings(rules, testPlatforms)
			require.NoError(t, err)
			sc := tt.sc
			sc.Source, sc.ObjectType, sc.ObjectID, sc.Stage, sc.OccurredAt = "hubspot", ObjectDeal, "1", "won", time.Now()
			planned, _ := m.Plan(sc)
			require.Len(t, planned, 1)
			p := planned[0]
			require.Equal(t, tt.currency, p.Currency)
			if tt.field == "" {
				require.Empty(t, p.Rejected)
				require.Empty(t, p.RejectedDetail)
				return
			}
			require.Equal(t, ReasonInvalidCurrency, p.Rejected)
			require.True(t, strings.HasPrefix(p.RejectedDetail, tt.field+": not an ISO 4217"), p.RejectedDetail)
			require.Empty(t, p.ValueReason)
			for _, raw := range []string{sc.Currency, sc.Properties["cur"]} {
				if strings.TrimSpace(raw) != "" {
					require.NotContains(t, p.RejectedDetail, raw, "the detail names the field, never its value")
				}
			}
		})
	}
}

func TestMappingDestinationValueOverride(t *testing.T) {
	t.Parallel()
	m, err := compileFile(t, "valid.yaml")
	require.NoError(t, err)
	planned, _ := m.Plan(StageChange{Source: "hubspot", ObjectType: ObjectDeal, ObjectID: "1", Pipeline: "default",
		Stage: "closedwon", Amount: dec("1000"), Currency: "SEK"})
	require.Len(t, planned, 2)
	require.Equal(t, "google-main", planned[0].Destination)
	require.Equal(t, "300", planned[0].Value.String())
	require.Equal(t, "SEK", planned[0].Currency)
	require.Equal(t, "meta-main", planned[1].Destination)
	require.Equal(t, "100", planned[1].Value.String())
	require.Equal(t, "EUR", planned[1].Currency)
}

func TestMappingVersion(t *testing.T) {
	t.Parallel()
	base := `mappings:
  - name: r
    match: {source: hubspot, stage: [closedwon]}
    value: {field: amount, multiplier: 0.30}
    destinations: [{destination: google-main, conversion: "1"}]
`
	// Same rules, different spelling: block style, key order, scalar stage, comments.
	respelled := `mappings:
  # the only rule
  - destinations:
      - conversion: "1"
        destination: google-main
    value:
      multiplier: 0.3
      field: amount
    match:
      stage: closedwon
      source: hubspot
    name: r
`
	changed := strings.Replace(base, "0.30", "0.4", 1)
	version := func(doc string) string {
		rules, err := parseMappingRules(t, doc)
		require.NoError(t, err)
		m, err := CompileMappings(rules, testPlatforms)
		require.NoError(t, err)
		return m.Version()
	}
	v := version(base)
	require.Len(t, v, 12)
	require.Equal(t, v, version(respelled))
	require.NotEqual(t, v, version(changed))

	empty, err := CompileMappings(nil, nil)
	require.NoError(t, err)
	require.Len(t, empty.Version(), 12)
	planned, unmatched := empty.Plan(StageChange{Stage: "closedwon"})
	require.Empty(t, planned)
	require.True(t, unmatched)

	var none *Mapping
	planned, unmatched = none.Plan(StageChange{Stage: "closedwon"})
	require.Empty(t, planned)
	require.True(t, unmatched)
	require.Empty(t, none.Version())
}

func TestMappingSummaryGolden(t *testing.T) {
	t.Parallel()
	m, err := compileFile(t, "valid.yaml")
	require.NoError(t, err)
	got := []byte(m.Summary())
	path := filepath.Join("testdata", "mappings", "valid.summary.golden")
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
	require.True(t, bytes.Contains(got, []byte(m.Version())))
}

func TestMappingErrorsAreTyped(t *testing.T) {
	t.Parallel()
	_, err := CompileMappings([]MappingRule{{Name: "x", Match: RuleMatch{Stage: MappingStrings{"a"}}}}, nil)
	var me *MappingError
	require.True(t, errors.As(err, &me))
	require.Equal(t, "destinations", me.Field)
}
