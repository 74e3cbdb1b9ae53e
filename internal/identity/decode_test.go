package identity_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/identity"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

var us = pii.Normalizer{DefaultRegion: "US"}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

const fullCapture = `{
  "subject": {"type": "contact", "source": "hubspot", "id": "901"},
  "captured_at": "2026-10-01T14:00:00+02:00",
  "click_ids": {"gclid": "Cj0KCQjw-abc", "fbclid": {"id": "IwAR2F4-dbP0", "clicked_at": "2026-09-30T08:00:00Z"}, "ttclid": null},
  "email": " Jane.Doe+promo@Gmail.com ",
  "phone": "(650) 555-1212",
  "first_name": "Jane",
  "last_name": "Doe",
  "city": "Palo Alto",
  "state": "California",
  "postal_code": "94301-1234",
  "country": "United States",
  "date_of_birth": "1990-05-17",
  "gender": "female",
  "external_id": "crm-901",
  "ip": "::ffff:203.0.113.9",
  "user_agent": "Mozilla/5.0",
  "lead_id": 1234567890123456,
  "consent": {"ad_user_data": "GRANTED", "ad_personalization": "denied"}
}`

func TestDecodeFullCapture(t *testing.T) {
	t.Parallel()
	got, err := identity.Decode([]byte(fullCapture), us)
	require.NoError(t, err)
	at := ts("2026-10-01T12:00:00Z")
	clicked := ts("2026-09-30T08:00:00Z")
	require.Equal(t, store.IdentityCapture{
		SubjectKey: "hubspot:contact:901",
		CapturedAt: at,
		Clicks: []store.Click{
			{Type: "gclid", ID: "Cj0KCQjw-abc", At: at},
			{Type: "fbclid", ID: "IwAR2F4-dbP0", At: clicked},
			{Type: "fbc", ID: "fb.1.1790755200000.IwAR2F4-dbP0", At: clicked},
		},
		Identifiers: pii.Set{
			"email":             sha("jane.doe+promo@gmail.com"),
			"email/google":      sha("janedoe@gmail.com"),
			"phone/e164":        sha("+16505551212"),
			"phone/digits":      sha("16505551212"),
			"first_name":        sha("jane"),
			"first_name/google": sha("jane"),
			"last_name":         sha("doe"),
			"last_name/google":  sha("doe"),
			"city":              sha("paloalto"),
			"state":             sha("ca"),
			"zip":               sha("94301"),
			"country":           sha("us"),
			"country/code":      "US",
			"date_of_birth":     sha("19900517"),
			"gender":            sha("f"),
			"external_id":       sha("crm-901"),
		},
		IP:        "203.0.113.9",
		UserAgent: "Mozilla/5.0",
		LeadID:    "1234567890123456",
		Consent:   store.Consent{AdUserData: "granted", AdPersonalization: "denied", CapturedAt: at},
	}, got)
}

func TestDecodeSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, payload, key string
	}{
		{"contact", `{"subject":{"type":"contact","source":"salesforce","id":"003AB"},"captured_at":"2026-10-01T12:00:00Z"}`, "salesforce:contact:003AB"},
		{"numeric id", `{"subject":{"type":"deal","source":"hubspot","id":88412},"captured_at":"2026-10-01T12:00:00Z"}`, "hubspot:deal:88412"},
		{"type case", `{"subject":{"type":"Lead","source":"pipedrive","id":"7"},"captured_at":"2026-10-01T12:00:00Z"}`, "pipedrive:lead:7"},
		{"external", `{"subject":{"type":"external","source":"webform","id":"u-1"},"captured_at":"2026-10-01T12:00:00Z"}`, "webform:external:u-1"},
		{"email", `{"subject":{"type":"email","id":" Jane.Doe@Example.com "},"captured_at":"2026-10-01T12:00:00Z"}`, "email:" + sha("jane.doe@example.com")},
		{"email ignores source", `{"subject":{"type":"email","source":"x","id":"jane.doe@example.com"},"captured_at":"2026-10-01T12:00:00Z"}`, "email:" + sha("jane.doe@example.com")},
		{"email prehashed", `{"subject":{"type":"email","id":"` + sha("jane.doe@example.com") + `"},"captured_at":"2026-10-01T12:00:00Z"}`, "email:" + sha("jane.doe@example.com")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := identity.Decode([]byte(tt.payload), us)
			require.NoError(t, err)
			require.Equal(t, tt.key, got.SubjectKey)
		})
	}

	// An email subject is also the capture's email identifier.
	got, err := identity.Decode([]byte(tests[4].payload), us)
	require.NoError(t, err)
	require.Equal(t, sha("jane.doe@example.com"), got.Identifiers.For(pii.Meta, pii.Email))
}

func TestDecodeClicks(t *testing.T) {
	t.Parallel()
	at := ts("2026-10-01T12:00:00Z")
	tests := []struct {
		name, clicks string
		want         []store.Click
	}{
		{"string clicks at captured_at", `{"gbraid":"GB1","msclkid":"f894f652ea334e739002f7167ab8f8e3","li_fat_id":"li-1"}`,
			[]store.Click{{Type: "gbraid", ID: "GB1", At: at}, {Type: "msclkid", ID: "f894f652ea334e739002f7167ab8f8e3", At: at}, {Type: "li_fat_id", ID: "li-1", At: at}}},
		{"fbclid derives fbc at captured_at", `{"fbclid":"IwAR2F4"}`,
			[]store.Click{{Type: "fbclid", ID: "IwAR2F4", At: at}, {Type: "fbc", ID: "fb.1.1790856000000.IwAR2F4", At: at}}},
		{"captured fbc wins over derived", `{"fbclid":"IwAR2F4","fbc":"fb.1.1700000000000.IwAR2F4","fbp":"fb.1.1596403881668.1116446470"}`,
			[]store.Click{{Type: "fbc", ID: "fb.1.1700000000000.IwAR2F4", At: at}, {Type: "fbp", ID: "fb.1.1596403881668.1116446470", At: at}, {Type: "fbclid", ID: "IwAR2F4", At: at}}},
		{"click ids keep case", `{"ttclid":"E.C.P.AbCd"}`, []store.Click{{Type: "ttclid", ID: "E.C.P.AbCd", At: at}}},
		{"empty and null are absent", `{"gclid":"","wbraid":null,"fbclid":{"id":""}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := identity.Decode([]byte(`{"subject":{"type":"lead","source":"s","id":"1"},"captured_at":"2026-10-01T12:00:00Z","click_ids":`+tt.clicks+`}`), us)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Clicks)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	const ok = `"subject":{"type":"contact","source":"hubspot","id":"1"},"captured_at":"2026-10-01T12:00:00Z"`
	tests := []struct {
		name, payload, field, reason string
	}{
		{"not json", `{"subject":`, "payload", "not a JSON object"},
		{"array", `[1,2]`, "payload", "not a JSON object"},
		{"trailing data", `{` + ok + `} {}`, "payload", "not a JSON object"},
		{"oversized", `{` + ok + `,"user_agent":"` + strings.Repeat("a", identity.MaxPayload) + `"}`, "payload", "larger than 1 MiB"},
		{"no subject", `{"captured_at":"2026-10-01T12:00:00Z"}`, "subject", "required"},
		{"subject not object", `{"subject":"hubspot:contact:1","captured_at":"2026-10-01T12:00:00Z"}`, "subject", "want an object, got a string"},
		{"subject type missing", `{"subject":{"source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.type", "required"},
		{"subject type bad", `{"subject":{"type":"account","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.type", "want contact, lead, deal, opportunity, email or external"},
		{"subject id missing", `{"subject":{"type":"contact","source":"h"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.id", "required"},
		{"subject source missing", `{"subject":{"type":"contact","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.source", "required for subject type contact"},
		{"subject unknown key", `{"subject":{"type":"contact","source":"h","id":"1","kind":"x"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.kind", "unknown field"},
		{"subject email invalid", `{"subject":{"type":"email","id":"not-an-address"},"captured_at":"2026-10-01T12:00:00Z"}`, "subject.id", "not a valid email address"},
		{"captured_at missing", `{"subject":{"type":"contact","source":"h","id":"1"}}`, "captured_at", "required"},
		{"captured_at not rfc3339", `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01 12:00:00"}`, "captured_at", "not an RFC 3339 timestamp"},
		{"captured_at number", `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":1790769600}`, "captured_at", "want a string, got a number"},
		{"unknown click type", `{` + ok + `,"click_ids":{"dclid":"x"}}`, "click_ids.dclid", "unknown click ID type (want one of gclid, gbraid, wbraid, fbc, fbp, fbclid, ttclid, msclkid, li_fat_id)"},
		{"click wrong type", `{` + ok + `,"click_ids":{"gclid":42}}`, "click_ids.gclid", "want a string or an object {id, clicked_at}, got a number"},
		{"click_ids wrong type", `{` + ok + `,"click_ids":["gclid"]}`, "click_ids", "want an object, got an array"},
		{"clicked_at bad", `{` + ok + `,"click_ids":{"gclid":{"id":"g","clicked_at":"yesterday"}}}`, "click_ids.gclid.clicked_at", "not an RFC 3339 timestamp"},
		{"clicked_at without id", `{` + ok + `,"click_ids":{"gclid":{"clicked_at":"2026-10-01T12:00:00Z"}}}`, "click_ids.gclid.id", "required with clicked_at"},
		{"click object unknown key", `{` + ok + `,"click_ids":{"gclid":{"id":"g","at":"x"}}}`, "click_ids.gclid.at", "unknown field"},
		{"click id with space", `{` + ok + `,"click_ids":{"gclid":"a b"}}`, "click_ids.gclid", "contains whitespace, control characters or invalid UTF-8"},
		{"fbc malformed", `{` + ok + `,"click_ids":{"fbc":"IwAR2F4"}}`, "click_ids.fbc", "want Meta's fb.<subdomain index>.<unix ms>.<value> format"},
		{"unparseable phone", `{` + ok + `,"phone":"555-CALL-NOW-12345"}`, "phone", "not a valid phone number for region US"},
		{"phone wrong type", `{` + ok + `,"phone":6505551212}`, "phone", "want a string, got a number"},
		{"bad email", `{` + ok + `,"email":"jane at example.com"}`, "email", "not a valid email address"},
		{"bad country", `{` + ok + `,"country":"Narnia"}`, "country", "not an ISO 3166-1 country code or English country name"},
		{"zip and postal_code differ", `{` + ok + `,"zip":"94301","postal_code":"10001"}`, "zip", "give zip or postal_code, not both"},
		{"bad consent", `{` + ok + `,"consent":{"ad_user_data":"yes"}}`, "consent.ad_user_data", "want granted, denied or unknown"},
		{"consent wrong type", `{` + ok + `,"consent":{"ad_personalization":true}}`, "consent.ad_personalization", "want a string, got a boolean"},
		{"consent unknown key", `{` + ok + `,"consent":{"analytics":"granted"}}`, "consent.analytics", "unknown field"},
		{"bad ip", `{` + ok + `,"ip":"203.0.113"}`, "ip", "not an IPv4 or IPv6 address"},
		{"bad lead id", `{` + ok + `,"lead_id":"lead-1"}`, "lead_id", "want digits only (a platform lead id)"},
		{"fractional lead id", `{` + ok + `,"lead_id":1.5}`, "lead_id", "want a string or a whole number"},
		{"unknown field", `{` + ok + `,"emial":"jane@example.com"}`, "emial", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := identity.Decode([]byte(tt.payload), us)
			require.Error(t, err)
			var fe *identity.FieldError
			require.True(t, errors.As(err, &fe), "typed error, got %T", err)
			require.Equal(t, tt.field, fe.Field)
			require.Equal(t, tt.reason, fe.Reason)
			require.Equal(t, tt.field+": "+tt.reason, err.Error())
		})
	}
}

func TestDecodeAbsentValues(t *testing.T) {
	t.Parallel()
	got, err := identity.Decode([]byte(`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z",
		"email":"","phone":null,"first_name":"  ","consent":{}}`), us)
	require.NoError(t, err)
	require.Nil(t, got.Identifiers, "empty values hash to nothing")
	require.Equal(t, store.Consent{}, got.Consent, "an empty consent object records no answer")
}

func TestDecodeCSVRecordMatchesJSON(t *testing.T) {
	t.Parallel()
	header := []string{"\ufeffSubject_Type", "subject_source", "subject_id", "captured_at", "email", "phone", "first_name", "last_name",
		"city", "state", "postal_code", "country", "date_of_birth", "gender", "external_id", "ip", "user_agent", "lead_id",
		"gclid", "fbclid", "fbclid_clicked_at", "ttclid", "consent_ad_user_data", "consent_ad_personalization"}
	record := []string{"contact", "hubspot", "901", "2026-10-01T14:00:00+02:00", " Jane.Doe+promo@Gmail.com ", "(650) 555-1212", "Jane", "Doe",
		"Palo Alto", "California", "94301-1234", "United States", "1990-05-17", "female", "crm-901", "::ffff:203.0.113.9", "Mozilla/5.0", "1234567890123456",
		"Cj0KCQjw-abc", "IwAR2F4-dbP0", "2026-09-30T08:00:00Z", "", "GRANTED", "denied"}
	fromCSV, err := identity.DecodeCSVRecord(header, record, us)
	require.NoError(t, err)
	fromJSON, err := identity.Decode([]byte(fullCapture), us)
	require.NoError(t, err)
	require.Equal(t, fromJSON, fromCSV)
}

func TestDecodeCSVErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		header, record []string
		field, reason  string
	}{
		{"missing required column", []string{"subject_type", "subject_source", "subject_id", "email"}, []string{"contact", "h", "1", ""}, "column captured_at", "required column missing from the header"},
		{"unknown column", []string{"subject_type", "subject_id", "captured_at", "utm_source"}, []string{"contact", "1", "2026-10-01T12:00:00Z", "x"}, "column utm_source", "unknown column (see identity.CSVColumns)"},
		{"repeated column", []string{"subject_type", "subject_id", "captured_at", "email", "Email"}, []string{"contact", "1", "2026-10-01T12:00:00Z", "", ""}, "column email", "appears twice"},
		{"short record", []string{"subject_type", "subject_id", "captured_at"}, []string{"contact", "1"}, "record", "has a different number of fields than the header"},
		{"clicked_at without id", []string{"subject_type", "subject_source", "subject_id", "captured_at", "gclid", "gclid_clicked_at"}, []string{"contact", "h", "1", "2026-10-01T12:00:00Z", "", "2026-10-01T12:00:00Z"}, "gclid_clicked_at", "given without gclid"},
		{"bad phone", []string{"subject_type", "subject_source", "subject_id", "captured_at", "phone"}, []string{"contact", "h", "1", "2026-10-01T12:00:00Z", "12"}, "phone", "not a valid phone number for region US"},
		{"bad consent", []string{"subject_type", "subject_source", "subject_id", "captured_at", "consent_ad_personalization"}, []string{"contact", "h", "1", "2026-10-01T12:00:00Z", "maybe"}, "consent.ad_personalization", "want granted, denied or unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := identity.DecodeCSVRecord(tt.header, tt.record, us)
			var fe *identity.FieldError
			require.True(t, errors.As(err, &fe), "typed error, got %v", err)
			require.Equal(t, tt.field, fe.Field)
			require.Equal(t, tt.reason, fe.Reason)
		})
	}
}

// TestNoRawPII decodes captures carrying known emails and phones and asserts that no raw
// form of them survives anywhere in the result or in any error.
func TestNoRawPII(t *testing.T) {
	t.Parallel()
	const (
		email = "Secret.Person+tag@Gmail.com"
		phone = "+1 (415) 555-0199"
	)
	needles := []string{email, strings.ToLower(email), "secretperson@gmail.com", "secret.person", phone, "4155550199", "+14155550199", "14155550199", "Secretia", "Hiddenberg", "secretia", "hiddenberg"}
	payloads := []string{
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z","email":"` + email + `","phone":"` + phone + `","first_name":"Secretia","last_name":"Hiddenberg"}`,
		`{"subject":{"type":"email","id":"` + email + `"},"captured_at":"2026-10-01T12:00:00Z","phone":"` + phone + `"}`,
	}
	for _, p := range payloads {
		got, err := identity.Decode([]byte(p), us)
		require.NoError(t, err)
		b, err := json.Marshal(got)
		require.NoError(t, err)
		require.NotEmpty(t, got.Identifiers)
		for _, needle := range needles {
			require.NotContains(t, strings.ToLower(string(b)), strings.ToLower(needle))
			require.NotContains(t, strings.ToLower(got.SubjectKey), strings.ToLower(needle))
		}
	}
	// Errors: each invalid capture still carries valid raw PII next to the bad field; none
	// of it may leak into the message.
	bad := []string{
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z","email":"` + email + `","phone":"415-555-019"}`,
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z","phone":"` + phone + `","email":"secret.person@"}`,
		`{"subject":{"type":"email","id":"secret.person@"},"captured_at":"2026-10-01T12:00:00Z","phone":"` + phone + `"}`,
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"bad","email":"` + email + `","phone":"` + phone + `"}`,
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z","email":["` + email + `"]}`,
		`{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z","phone":{"number":"` + phone + `"}}`,
		`{"subject":{"type":"contact","source":"h","id":"1"},"email":"` + email + `", "phone":"` + phone + ``,
	}
	for _, p := range bad {
		_, err := identity.Decode([]byte(p), us)
		require.Error(t, err)
		for _, needle := range append(needles, "secret.person@", "415-555-019") {
			require.NotContains(t, strings.ToLower(err.Error()), strings.ToLower(needle))
		}
	}
	_, err := identity.DecodeCSVRecord([]string{"subject_type", "subject_source", "subject_id", "captured_at", "email", "phone"},
		[]string{"contact", "h", "1", "2026-10-01T12:00:00Z", email, "415-555-019"}, us)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "415-555-019")
	require.NotContains(t, strings.ToLower(err.Error()), "secret")
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(fullCapture))
	f.Add([]byte(`{"subject":{"type":"email","id":"a@b.co"},"captured_at":"2026-10-01T12:00:00Z","click_ids":{"fbclid":"x"}}`))
	f.Add([]byte(`{"subject":{"type":"contact","source":"h","id":1},"captured_at":"2026-10-01T12:00:00Z","click_ids":{"gclid":{"id":"g","clicked_at":"2026-09-01T00:00:00Z"}},"lead_id":1e3}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"subject":{}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := identity.Decode(payload, us)
		if err != nil {
			var fe *identity.FieldError
			require.True(t, errors.As(err, &fe), "typed error, got %T", err)
			require.NotEmpty(t, fe.Field)
			require.NotEmpty(t, fe.Reason)
			return
		}
		require.NotEmpty(t, c.SubjectKey)
		require.False(t, c.CapturedAt.IsZero())
		for k, v := range c.Identifiers {
			if k == pii.CountryCodeKey {
				continue
			}
			require.True(t, pii.IsSHA256Hex(v), "identifier %s is a hash", k)
		}
		for _, cl := range c.Clicks {
			require.NotEmpty(t, cl.ID)
			require.False(t, cl.At.IsZero())
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	payload := []byte(fullCapture)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := identity.Decode(payload, us); err != nil {
			b.Fatal(err)
		}
	}
}
