package crm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

// The -update flag may already be registered by the package's other tests; register it
// here only when it is not, and read it by name either way.
var _ = func() bool {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata")
	}
	return true
}()

func goldenUpdate() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// normalizer is what production uses for a US default region.
var normalizer = pii.Normalizer{DefaultRegion: "US"}

// rawPII lists every raw email and phone the fixtures carry: none may appear in a golden
// file or in an error.
var rawPII = []string{
	"someone@",
	"Jane.Doe", "jane.doe", "Example.com", "(415) 555-0132", "4155550132", "Lead.Person", "lead.person",
	"(415) 555-0199", "415-555-0199", "4155550199", "new.lead", "not a phone",
}

// goldenResult is what a golden file holds for one fixture: the decoded result, or the
// error that made the whole message undecodable.
type goldenResult struct {
	Decoded *crm.Decoded     `json:"decoded,omitempty"`
	Error   *crm.DecodeError `json:"error,omitempty"`
}

func TestDecodeFixtures(t *testing.T) {
	t.Parallel()
	for _, format := range crm.Formats {
		files, err := filepath.Glob(filepath.Join("testdata", format, "*"))
		require.NoError(t, err)
		require.NotEmpty(t, files, "no fixtures for %s", format)
		for _, file := range files {
			name := format + "/" + filepath.Base(file)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				payload, err := os.ReadFile(file)
				require.NoError(t, err)
				got := decodeGolden(t, format, payload)
				golden := filepath.Join("testdata", "golden", format, strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))+".json")
				if goldenUpdate() {
					require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
					require.NoError(t, os.WriteFile(golden, got, 0o644))
				}
				want, err := os.ReadFile(golden)
				require.NoError(t, err, "run go test ./crm -run TestDecodeFixtures -update to create it")
				require.Equal(t, string(want), string(got))
				for _, raw := range rawPII {
					require.NotContains(t, string(got), raw, "raw PII in the decoded output")
				}
				require.NotContains(t, string(got), "@", "an email in the decoded output")
			})
		}
	}
}

// decodeGolden decodes payload and renders the golden form, checking the invariants every
// result must hold on the way.
func decodeGolden(t *testing.T, format string, payload []byte) []byte {
	t.Helper()
	dec, err := crm.Decode(format, payload, normalizer)
	var res goldenResult
	if err != nil {
		var de *crm.DecodeError
		require.True(t, errors.As(err, &de), "error is not a *DecodeError: %v", err)
		res.Error = de
	} else {
		checkDecoded(t, dec)
		res.Decoded = &dec
	}
	out, merr := json.MarshalIndent(res, "", "  ")
	require.NoError(t, merr)
	return append(out, '\n')
}

// checkDecoded asserts what every successful decode must satisfy.
func checkDecoded(t testing.TB, dec crm.Decoded) {
	t.Helper()
	for _, tc := range dec.Thin {
		require.Equal(t, "attio", tc.Source)
		require.NotEmpty(t, tc.ObjectID)
		ref, ok := crm.ParseAttioRef(tc.FetchRef)
		require.True(t, ok, "fetch ref %q", tc.FetchRef)
		require.Equal(t, tc.FetchRef, ref.String())
		require.NotEmpty(t, tc.Properties[crm.PropertyAttioAttribute])
	}
	for _, sc := range dec.Changes {
		require.NotEmpty(t, sc.Source)
		require.Contains(t, []string{crm.ObjectDeal, crm.ObjectOpportunity, crm.ObjectLead, crm.ObjectContact}, sc.ObjectType)
		require.NotEmpty(t, sc.ObjectID)
		require.NotEmpty(t, sc.Stage)
		require.Contains(t, []string{"", crm.StatusOpen, crm.StatusWon, crm.StatusLost}, sc.Status)
		require.False(t, sc.OccurredAt.IsZero())
		require.Equal(t, "UTC", sc.OccurredAt.Location().String())
		if sc.Amount != nil {
			require.False(t, sc.Amount.IsNegative())
		}
		for k, v := range sc.Identifiers {
			if k == pii.CountryCodeKey {
				continue
			}
			require.True(t, pii.IsSHA256Hex(v), "identifier %s is not a hash", k)
		}
		for k := range sc.ClickIDs {
			require.Contains(t, crm.ClickIDKeys, k)
		}
		// What Decode prints reads back as canonical input to the same stage change.
		out, err := json.Marshal(sc)
		require.NoError(t, err)
		back, err := crm.Decode(crm.FormatCanonical, out, normalizer)
		require.NoError(t, err, "printed stage change does not read back: %s", out)
		require.Len(t, back.Changes, 1)
		again, err := json.Marshal(back.Changes[0])
		require.NoError(t, err)
		require.JSONEq(t, string(out), string(again))
	}
	for _, b := range append(append([]*crm.DecodeError{}, dec.Bad...), dec.Dropped...) {
		require.NotEmpty(t, b.Reason)
		require.GreaterOrEqual(t, b.Index, -1)
	}
	_, err := json.Marshal(dec)
	require.NoError(t, err)
}

func TestDecodeRejectsWholeMessages(t *testing.T) {
	t.Parallel()
	huge := append([]byte(`{"source":"`), bytes.Repeat([]byte("a"), crm.MaxPayloadBytes)...)
	huge = append(huge, `"}`...)
	tests := []struct {
		name, format string
		payload      string
		field        string
		reason       string
	}{
		{"unknown format", "zoho", `{}`, "format", "unknown format"},
		{"empty format", "", `{}`, "format", "unknown format"},
		{"format case", "HubSpot", `"x"`, "", "must be a JSON array"},
		{"empty payload", crm.FormatCanonical, "  \n", "", "empty"},
		{"huge payload", crm.FormatHubSpot, string(huge), "", "over the 1048576-byte limit"},
		{"huge canonical", crm.FormatCanonical, string(huge), "", "over the 1048576-byte limit"},

		{"canonical malformed", crm.FormatCanonical, `{"source":`, "", "malformed JSON"},
		{"canonical trailing garbage", crm.FormatCanonical, `{} {}`, "", "malformed JSON"},
		{"canonical array", crm.FormatCanonical, `[]`, "", "must be a JSON object, got an array"},
		{"canonical unknown field", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","amout":1}`, "amout", "unknown field"},
		{"canonical object_id bool", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":true,"stage":"s","occurred_at":"2024-05-01T10:00:00Z"}`, "object_id", "got a boolean"},
		{"canonical object_id fraction", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":1.5,"stage":"s","occurred_at":"2024-05-01T10:00:00Z"}`, "object_id", "fractional"},
		{"canonical bad object_type", crm.FormatCanonical, `{"source":"r","object_type":"ticket","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z"}`, "object_type", "must be one of"},
		{"canonical bad status", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","status":"closed","occurred_at":"2024-05-01T10:00:00Z"}`, "status", "must be one of open, won, lost"},
		{"canonical bad time", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01 10:00:00"}`, "occurred_at", "RFC 3339"},
		{"canonical time out of range", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"0001-01-01T00:00:00Z"}`, "occurred_at", "out of range"},
		{"canonical missing stage", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","occurred_at":"2024-05-01T10:00:00Z"}`, "stage", "required"},
		{"canonical amount not numeric", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","amount":"ten"}`, "amount", "not a decimal"},
		{"canonical amount negative", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","amount":-5}`, "amount", "negative"},
		{"canonical currency", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","currency":"EURO"}`, "currency", "ISO 4217"},
		{"canonical click id unknown", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","click_ids":{"dclid":"x"}}`, "click_ids.dclid", "unknown click id"},
		{"canonical click id number", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","click_ids":{"gclid":5}}`, "click_ids.gclid", "must be a string"},
		{"canonical property bool", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","properties":{"vip":true}}`, "properties.vip", "string or a number"},
		{"canonical contact id object", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","contact_ids":[{}]}`, "contact_ids[0]", "got an object"},
		{"canonical source colon", crm.FormatCanonical, `{"source":"a:b","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z"}`, "source", "':'"},
		{"canonical email number", crm.FormatCanonical, `{"source":"r","object_type":"deal","object_id":"1","stage":"s","occurred_at":"2024-05-01T10:00:00Z","email":5}`, "email", "must be a string"},

		{"hubspot malformed", crm.FormatHubSpot, `[{"objectId":1,`, "", "malformed JSON"},
		{"hubspot string", crm.FormatHubSpot, `"x"`, "", "must be a JSON array"},

		{"salesforce malformed json", crm.FormatSalesforce, `{"ChangeEventHeader":`, "", "malformed JSON"},
		{"salesforce malformed xml", crm.FormatSalesforce, `<soapenv:Envelope><soapenv:Body>`, "", "malformed XML"},
		{"salesforce not soap", crm.FormatSalesforce, `<html></html>`, "", "not a SOAP envelope"},
		{"salesforce soap without notifications", crm.FormatSalesforce, `<Envelope><Body></Body></Envelope>`, "Body.notifications", "required"},
		{"salesforce xml entity", crm.FormatSalesforce, `<!DOCTYPE x [<!ENTITY a "aaaa">]><Envelope><Body><notifications><OrganizationId>&a;</OrganizationId></notifications></Body></Envelope>`, "", "malformed XML"},
		{"salesforce no header", crm.FormatSalesforce, `{"StageName":"Closed Won"}`, "ChangeEventHeader", "required"},
		{"salesforce number", crm.FormatSalesforce, `42`, "", "got a number"},
		{"salesforce single event bad time", crm.FormatSalesforce, `{"ChangeEventHeader":{"entityName":"Opportunity","changeType":"UPDATE","recordIds":["006A"],"commitTimestamp":"soon"},"StageName":"Closed Won"}`, "ChangeEventHeader.commitTimestamp", "epoch milliseconds"},
		{"salesforce wildcard record", crm.FormatSalesforce, `{"ChangeEventHeader":{"entityName":"Opportunity","changeType":"UPDATE","recordIds":["006*"],"commitTimestamp":1714557600000},"StageName":"Closed Won"}`, "ChangeEventHeader.recordIds[0]", "wildcard"},

		{"pipedrive malformed", crm.FormatPipedrive, `{"meta":`, "", "malformed JSON"},
		{"pipedrive array", crm.FormatPipedrive, `[]`, "", "must be a JSON object"},
		{"pipedrive v2 stage array", crm.FormatPipedrive, `{"meta":{"action":"change","entity":"deal","timestamp":1714558300},"data":{"id":1,"stage_id":[9],"status":"open"},"previous":{"stage_id":8}}`, "data.stage_id", "got an array"},
		{"pipedrive v2 meta missing", crm.FormatPipedrive, `{"data":{"id":1}}`, "meta.action", "required"},
		{"pipedrive v1 bad time", crm.FormatPipedrive, `{"event":"updated.deal","current":{"id":1,"stage_id":2,"status":"open","update_time":"yesterday"},"previous":{"id":1,"stage_id":1,"status":"open"}}`, "current.update_time", "YYYY-MM-DD HH:MM:SS"},
		{"pipedrive v1 bad status", crm.FormatPipedrive, `{"event":"updated.deal","current":{"id":1,"stage_id":2,"status":"pending","update_time":"2024-05-01 10:00:00"},"previous":{"id":1,"stage_id":1,"status":"open"}}`, "current.status", "must be one of"},
		{"pipedrive no event", crm.FormatPipedrive, `{"current":{"id":1}}`, "event", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec, err := crm.Decode(tt.format, []byte(tt.payload), normalizer)
			require.Error(t, err)
			var de *crm.DecodeError
			require.True(t, errors.As(err, &de), "error is %T", err)
			require.Equal(t, tt.field, de.Field)
			require.Contains(t, de.Reason, tt.reason)
			require.Equal(t, -1, de.Index)
			require.NotEmpty(t, de.Format)
			require.Empty(t, dec.Changes)
			require.Less(t, len(err.Error()), 300, "error message carries too much")
		})
	}
}

func TestDecodeHubSpotBatchKeepsGoodEvents(t *testing.T) {
	t.Parallel()
	payload, err := os.ReadFile("testdata/hubspot/one_bad.json")
	require.NoError(t, err)
	dec, err := crm.Decode(crm.FormatHubSpot, payload, normalizer)
	require.NoError(t, err)
	require.Len(t, dec.Changes, 2)
	require.Equal(t, "9101", dec.Changes[0].ObjectID)
	require.Equal(t, crm.StatusWon, dec.Changes[0].Status)
	require.Equal(t, "9104", dec.Changes[1].ObjectID)
	require.Equal(t, crm.StatusOpen, dec.Changes[1].Status)
	require.Len(t, dec.Bad, 3)
	require.Equal(t, []int{1, 2, 3}, []int{dec.Bad[0].Index, dec.Bad[1].Index, dec.Bad[2].Index})
	require.Equal(t, "occurredAt", dec.Bad[0].Field)
	require.Equal(t, "objectId", dec.Bad[1].Field)
	require.Contains(t, dec.Bad[2].Reason, "JSON object")
}

func TestDecodeIdentifiersAreHashedOnArrival(t *testing.T) {
	t.Parallel()
	const email, phone = "Someone.Else@Example.com", "+1 (212) 555-0100"
	payload := `{"source":"relay","object_type":"contact","object_id":"c9","stage":"customer",
		"occurred_at":"2024-05-01T10:00:00Z","email":"` + email + `","phone":"` + phone + `"}`
	dec, err := crm.Decode(crm.FormatCanonical, []byte(payload), normalizer)
	require.NoError(t, err)
	require.Len(t, dec.Changes, 1)
	want := pii.Set{}
	require.NoError(t, normalizer.Add(want, pii.Email, email))
	require.NoError(t, normalizer.Add(want, pii.Phone, phone))
	require.Equal(t, want, dec.Changes[0].Identifiers)
	out, err := json.Marshal(dec)
	require.NoError(t, err)
	require.NotContains(t, string(out), "Example.com")
	require.NotContains(t, string(out), "555")
}

func TestDecodeDropsUnusableIdentifiersWithoutEchoing(t *testing.T) {
	t.Parallel()
	payload := `{"source":"relay","object_type":"lead","object_id":"l1","stage":"mql",
		"occurred_at":"2024-05-01T10:00:00Z","email":"secret-not-an-email","phone":"12"}`
	dec, err := crm.Decode(crm.FormatCanonical, []byte(payload), normalizer)
	require.NoError(t, err)
	require.Len(t, dec.Changes, 1, "the stage change is kept")
	require.Empty(t, dec.Changes[0].Identifiers)
	require.Len(t, dec.Dropped, 2)
	for _, d := range dec.Dropped {
		require.NotContains(t, d.Error(), "secret-not-an-email")
		require.Contains(t, []string{"email", "phone"}, d.Field)
	}
}

func TestDecodeSalesforceOneChangePerRecordID(t *testing.T) {
	t.Parallel()
	payload, err := os.ReadFile("testdata/salesforce/cdc_lead_pubsub.json")
	require.NoError(t, err)
	dec, err := crm.Decode(crm.FormatSalesforce, payload, normalizer)
	require.NoError(t, err)
	require.Len(t, dec.Changes, 2)
	require.Equal(t, "00Q5g00000LmNoPAAV", dec.Changes[0].ObjectID)
	require.Equal(t, "00Q5g00000LmNoQAAV", dec.Changes[1].ObjectID)
	require.Equal(t, dec.Changes[0].Identifiers, dec.Changes[1].Identifiers)
	// The sets are copies: changing one must not change the other.
	dec.Changes[0].Identifiers["email"] = "x"
	require.NotEqual(t, "x", dec.Changes[1].Identifiers["email"])
}

func TestDecodePipedriveIgnoresChangesOfNeitherStageNorStatus(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"v1_updated_deal_title_only.json", "v2_change_title_only.json", "v1_added_person.json"} {
		payload, err := os.ReadFile("testdata/pipedrive/" + f)
		require.NoError(t, err)
		dec, err := crm.Decode(crm.FormatPipedrive, payload, normalizer)
		require.NoError(t, err, f)
		require.Empty(t, dec.Changes, f)
		require.Equal(t, 1, dec.Ignored, f)
	}
}

func TestDecodeErrorString(t *testing.T) {
	t.Parallel()
	e := &crm.DecodeError{Format: "hubspot", Field: "occurredAt", Reason: "required", Index: 3}
	require.Equal(t, "hubspot: event 3: occurredAt: required", e.Error())
	e = &crm.DecodeError{Format: "canonical", Reason: "payload is empty", Index: -1}
	require.Equal(t, "canonical: payload is empty", e.Error())
}
