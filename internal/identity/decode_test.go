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
	require.Equal(t, sha("jane.doe@example.com"), got.Identifiers.Get(pii.KeyEmail))
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

// withOK is a capture with a valid subject and captured_at, then rest (a comma and more
// members, or nothing).
func withOK(rest string) string {
	return `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"` + rest + `}`
}

// jsonCase is a payload and what Decode makes of it: want when field is empty, otherwise
// the *FieldError's Field and Reason.
type jsonCase struct {
	name, payload string
	want          store.IdentityCapture
	field, reason string
}

// sameAsEncodingJSON pins Decode on awkward JSON: repeated keys, escapes, surrogates,
// invalid UTF-8, numbers for ids, nulls, whitespace, wrong kinds, syntax errors, unknown
// keys and which error comes first. Every expectation was recorded by running the
// encoding/json implementation of Decode (as of caedc00) once and is written here as a
// literal, so the fastjson implementation is held to exactly what it replaced.
var sameAsEncodingJSON = []jsonCase{
	{name: "duplicate top-level key, last valid wins", payload: `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":"yesterday","captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "duplicate top-level key, last invalid wins", payload: withOK(`,"captured_at":"yesterday"`),
		field: `captured_at`, reason: `not an RFC 3339 timestamp`},
	{name: "duplicate subject.id", payload: `{"subject":{"type":"contact","source":"h","id":"1","id":"2"},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `h:contact:2`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "duplicate subject object", payload: `{"subject":{"type":"lead","source":"a","id":"1"},"captured_at":"2026-10-01T12:00:00Z","subject":{"type":"deal","source":"b","id":"9"}}`,
		want: store.IdentityCapture{SubjectKey: `b:deal:9`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "duplicate then null is absent", payload: withOK(`,"ip":"203.0.113.9","ip":null`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null then duplicate value", payload: withOK(`,"ip":null,"ip":"203.0.113.9"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), IP: `203.0.113.9`}},
	{name: "duplicate click type", payload: withOK(`,"click_ids":{"gclid":"first","gclid":"second"}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "gclid", ID: `second`, At: ts("2026-10-01T12:00:00Z")}}}},
	{name: "duplicate click_ids objects", payload: withOK(`,"click_ids":{"gclid":"first"},"click_ids":{"ttclid":"second"}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "ttclid", ID: `second`, At: ts("2026-10-01T12:00:00Z")}}}},
	{name: "duplicate consent key", payload: withOK(`,"consent":{"ad_user_data":"denied","ad_user_data":"granted"}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Consent: store.Consent{AdUserData: "granted", AdPersonalization: "", CapturedAt: ts("2026-10-01T12:00:00Z")}}},
	{name: "duplicate key in click object", payload: withOK(`,"click_ids":{"gclid":{"id":"a","id":"b","clicked_at":"2026-09-30T08:00:00Z"}}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "gclid", ID: `b`, At: ts("2026-09-30T08:00:00Z")}}}},
	{name: "zip then postal_code duplicate pair", payload: withOK(`,"zip":"94301","postal_code":"94301","zip":"10001"`),
		field: `zip`, reason: `give zip or postal_code, not both`},
	{name: "escape \\u00e9", payload: withOK(`,"user_agent":"caf\u00e9"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: `café`}},
	{name: "escape surrogate pair", payload: withOK(`,"user_agent":"smile \ud83d\ude00 upper \uD83D\uDE00"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: `smile 😀 upper 😀`}},
	{name: "lone high surrogate", payload: withOK(`,"user_agent":"a\ud800b"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffdb"}},
	{name: "lone high surrogate at end", payload: withOK(`,"user_agent":"a\ud800"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffd"}},
	{name: "lone low surrogate", payload: withOK(`,"user_agent":"a\udc00b"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffdb"}},
	{name: "high surrogate then plain escape", payload: withOK(`,"user_agent":"\ud800\u0041"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "\ufffdA"}},
	{name: "high surrogate twice then low", payload: withOK(`,"user_agent":"\ud800\ud83d\ude00"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "\ufffd\U0001f600"}},
	{name: "low then high surrogate", payload: withOK(`,"user_agent":"\ude00\ud83d"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "\ufffd\ufffd"}},
	{name: "escaped backslash before u", payload: withOK(`,"user_agent":"a\\ud800"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: `a\ud800`}},
	{name: "escaped backslash before surrogate escape", payload: withOK(`,"user_agent":"a\\\ud800"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\\\ufffd"}},
	{name: "simple escapes", payload: withOK(`,"user_agent":"q\"b\\s\/b\bf\fn\nr\rt\t"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "q\"b\\s/b\bf\fn\nr\rt"}},
	{name: "escape nul", payload: withOK(`,"user_agent":"a\u0000b"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\x00b"}},
	{name: "escaped key", payload: `{"subj\u0065ct":{"type":"contact","source":"h","id":"1"},"captured_\u0061t":"2026-10-01T12:00:00Z","\u0069p":"203.0.113.9"}`,
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), IP: `203.0.113.9`}},
	{name: "escaped unknown key with surrogate", payload: withOK(`,"x\ud800":"v"`),
		field: `"x\ufffd"`, reason: `unknown field`},
	{name: "escaped unknown key with pair", payload: withOK(`,"x\ud83d\ude00":"v"`),
		field: `"x\U0001f600"`, reason: `unknown field`},
	{name: "escaped click id", payload: withOK(`,"click_ids":{"gclid":"Cj0\u004bCQ"}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "gclid", ID: `Cj0KCQ`, At: ts("2026-10-01T12:00:00Z")}}}},
	{name: "escaped space in click id", payload: withOK(`,"click_ids":{"gclid":"a\u0020b"}`),
		field: `click_ids.gclid`, reason: `contains whitespace, control characters or invalid UTF-8`},
	{name: "escaped email", payload: withOK(`,"email":"jane\u002edoe\u0040example.com"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Identifiers: pii.Set{"email": "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d", "email/google": "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"}}},
	{name: "escaped non-ascii first name", payload: withOK(`,"first_name":"Ren\u00e9e"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Identifiers: pii.Set{"first_name": "c40ff11aec12e899a09b7b0067b74c8006e2042a880a9e04bbed42bc9d2506e3", "first_name/google": "c40ff11aec12e899a09b7b0067b74c8006e2042a880a9e04bbed42bc9d2506e3"}}},
	{name: "invalid byte in user_agent", payload: withOK(",\"user_agent\":\"Mozilla\xff/5.0\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "Mozilla\ufffd/5.0"}},
	{name: "truncated sequence in user_agent", payload: withOK(",\"user_agent\":\"a\xe2\x82b\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffd\ufffdb"}},
	{name: "utf-8 encoded surrogate in user_agent", payload: withOK(",\"user_agent\":\"a\xed\xa0\x80b\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffd\ufffd\ufffdb"}},
	{name: "overlong encoding in user_agent", payload: withOK(",\"user_agent\":\"a\xc0\xafb\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "a\ufffd\ufffdb"}},
	{name: "invalid byte next to escape", payload: withOK(",\"user_agent\":\"\xc3\\u00a9\xa9\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: "\ufffd\u00a9\ufffd"}},
	{name: "invalid byte in subject id", payload: "{\"subject\":{\"type\":\"contact\",\"source\":\"h\",\"id\":\"a\xffb\"},\"captured_at\":\"2026-10-01T12:00:00Z\"}",
		want: store.IdentityCapture{SubjectKey: "h:contact:a\ufffdb", CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "invalid byte in subject source", payload: "{\"subject\":{\"type\":\"contact\",\"source\":\"h\xfe\",\"id\":\"1\"},\"captured_at\":\"2026-10-01T12:00:00Z\"}",
		want: store.IdentityCapture{SubjectKey: "h\ufffd:contact:1", CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "invalid byte in click id", payload: withOK(",\"click_ids\":{\"gclid\":\"a\xffb\"}"),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "gclid", ID: "a\ufffdb", At: ts("2026-10-01T12:00:00Z")}}}},
	{name: "invalid byte in first name", payload: withOK(",\"first_name\":\"Jo\xffe\""),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Identifiers: pii.Set{"first_name": "78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3", "first_name/google": "9a6f3bdca1f042561deb99cd783228cf41b2d2f4070459b2f313ca46f379c7c0"}}},
	{name: "invalid byte in key", payload: withOK(",\"x\xff\":\"v\""),
		field: `"x\ufffd"`, reason: `unknown field`},
	{name: "invalid byte in nested key", payload: withOK(",\"consent\":{\"ad_\xff\":\"granted\"}"),
		field: `consent."ad_\ufffd"`, reason: `unknown field`},
	{name: "valid multibyte in key", payload: withOK(`,"émail":"v"`),
		field: `"\u00e9mail"`, reason: `unknown field`},
	{name: "subject id integer", payload: `{"subject":{"type":"deal","source":"hubspot","id":88412},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:88412`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id negative", payload: `{"subject":{"type":"deal","source":"hubspot","id":-7},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:-7`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id fraction kept as written", payload: `{"subject":{"type":"deal","source":"hubspot","id":1.50},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:1.50`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id exponent kept as written", payload: `{"subject":{"type":"deal","source":"hubspot","id":1E+3},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:1E+3`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id zero", payload: `{"subject":{"type":"deal","source":"hubspot","id":0},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:0`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id beyond uint64", payload: `{"subject":{"type":"deal","source":"hubspot","id":123456789012345678901234567890},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:123456789012345678901234567890`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "subject id number with spaces", payload: `{"subject":{"type":"deal","source":"hubspot","id":  42  },"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `hubspot:deal:42`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "email subject numeric id", payload: `{"subject":{"type":"email","id":42},"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject.id`, reason: `not a valid email address`},
	{name: "lead_id zero", payload: withOK(`,"lead_id":0`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), LeadID: `0`}},
	{name: "lead_id max uint64", payload: withOK(`,"lead_id":18446744073709551615`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), LeadID: `18446744073709551615`}},
	{name: "lead_id beyond uint64", payload: withOK(`,"lead_id":18446744073709551616`),
		field: `lead_id`, reason: `want a string or a whole number`},
	{name: "lead_id exponent", payload: withOK(`,"lead_id":1e3`),
		field: `lead_id`, reason: `want a string or a whole number`},
	{name: "lead_id negative", payload: withOK(`,"lead_id":-1`),
		field: `lead_id`, reason: `want a string or a whole number`},
	{name: "lead_id fraction zero", payload: withOK(`,"lead_id":1.0`),
		field: `lead_id`, reason: `want a string or a whole number`},
	{name: "lead_id string trimmed", payload: withOK(`,"lead_id":" 42 "`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), LeadID: `42`}},
	{name: "lead_id string escaped digits", payload: withOK(`,"lead_id":"\u0034\u0032"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), LeadID: `42`}},
	{name: "lead_id boolean", payload: withOK(`,"lead_id":true`),
		field: `lead_id`, reason: `want a string, got a boolean`},
	{name: "lead_id array", payload: withOK(`,"lead_id":[1]`),
		field: `lead_id`, reason: `want a string, got an array`},
	{name: "lead_id object", payload: withOK(`,"lead_id":{}`),
		field: `lead_id`, reason: `want a string, got an object`},
	{name: "subject id boolean", payload: `{"subject":{"type":"contact","source":"h","id":false},"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject.id`, reason: `want a string, got a boolean`},
	{name: "subject type number", payload: `{"subject":{"type":1,"source":"h","id":"1"},"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject.type`, reason: `want a string, got a number`},
	{name: "subject array", payload: `{"subject":[],"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject`, reason: `want an object, got an array`},
	{name: "subject number", payload: `{"subject":1,"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject`, reason: `want an object, got a number`},
	{name: "subject boolean", payload: `{"subject":true,"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject`, reason: `want an object, got a boolean`},
	{name: "email object", payload: withOK(`,"email":{"v":1}`),
		field: `email`, reason: `want a string, got an object`},
	{name: "email array", payload: withOK(`,"email":[]`),
		field: `email`, reason: `want a string, got an array`},
	{name: "email boolean", payload: withOK(`,"email":false`),
		field: `email`, reason: `want a string, got a boolean`},
	{name: "click_ids string", payload: withOK(`,"click_ids":"gclid"`),
		field: `click_ids`, reason: `want an object, got a string`},
	{name: "click_ids number", payload: withOK(`,"click_ids":7`),
		field: `click_ids`, reason: `want an object, got a number`},
	{name: "click boolean", payload: withOK(`,"click_ids":{"gclid":true}`),
		field: `click_ids.gclid`, reason: `want a string or an object {id, clicked_at}, got a boolean`},
	{name: "click array", payload: withOK(`,"click_ids":{"gclid":["a"]}`),
		field: `click_ids.gclid`, reason: `want a string or an object {id, clicked_at}, got an array`},
	{name: "click object id number", payload: withOK(`,"click_ids":{"gclid":{"id":5}}`),
		field: `click_ids.gclid.id`, reason: `want a string, got a number`},
	{name: "consent array", payload: withOK(`,"consent":[]`),
		field: `consent`, reason: `want an object, got an array`},
	{name: "consent string", payload: withOK(`,"consent":"granted"`),
		field: `consent`, reason: `want an object, got a string`},
	{name: "consent value object", payload: withOK(`,"consent":{"ad_user_data":{}}`),
		field: `consent.ad_user_data`, reason: `want a string, got an object`},
	{name: "null subject", payload: `{"subject":null,"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject`, reason: `required`},
	{name: "null captured_at", payload: `{"subject":{"type":"contact","source":"h","id":"1"},"captured_at":null}`,
		field: `captured_at`, reason: `required`},
	{name: "null unknown top-level key ignored", payload: withOK(`,"bogus":null`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null unknown subject key ignored", payload: `{"subject":{"type":"contact","source":"h","id":"1","kind":null},"captured_at":"2026-10-01T12:00:00Z"}`,
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null subject fields", payload: `{"subject":{"type":"contact","source":null,"id":null},"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject.id`, reason: `required`},
	{name: "null unknown consent key ignored", payload: withOK(`,"consent":{"analytics":null,"ad_user_data":"granted"}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Consent: store.Consent{AdUserData: "granted", AdPersonalization: "", CapturedAt: ts("2026-10-01T12:00:00Z")}}},
	{name: "null consent values", payload: withOK(`,"consent":{"ad_user_data":null,"ad_personalization":null}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null consent", payload: withOK(`,"consent":null`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null unknown click type still unknown", payload: withOK(`,"click_ids":{"dclid":null}`),
		field: `click_ids.dclid`, reason: `unknown click ID type (want one of gclid, gbraid, wbraid, fbc, fbp, fbclid, ttclid, msclkid, li_fat_id)`},
	{name: "null click values", payload: withOK(`,"click_ids":{"gclid":null,"fbclid":{"id":null,"clicked_at":null},"ttclid":{"id":"t","clicked_at":null,"at":null}}`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"),
			Clicks: []store.Click{{Type: "ttclid", ID: `t`, At: ts("2026-10-01T12:00:00Z")}}}},
	{name: "null click_ids", payload: withOK(`,"click_ids":null`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "null lead_id and pii", payload: withOK(`,"lead_id":null,"email":null,"phone":null,"user_agent":null`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "whitespace around everything", payload: " \t\r\n{ \"subject\" : { \"type\" : \" contact \" , \"source\" : \"h\" , \"id\" : \" 1 \" } ,\n\t\"captured_at\" : \"  2026-10-01T12:00:00Z\\t\" , \"ip\" : \" 203.0.113.9 \" } \r\n\t ",
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), IP: `203.0.113.9`}},
	{name: "whitespace-only string is absent", payload: withOK(`,"email":" \t ","user_agent":"\n"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z")}},
	{name: "escaped whitespace trimmed", payload: withOK(`,"user_agent":"\t Mozilla \n"`),
		want: store.IdentityCapture{SubjectKey: `h:contact:1`, CapturedAt: ts("2026-10-01T12:00:00Z"), UserAgent: `Mozilla`}},
	{name: "form feed before object", payload: "\f" + withOK(``),
		field: `payload`, reason: `not a JSON object`},
	{name: "no-break space before object", payload: "\u00a0" + withOK(``),
		field: `payload`, reason: `not a JSON object`},
	{name: "byte order mark before object", payload: "\ufeff" + withOK(``),
		field: `payload`, reason: `not a JSON object`},
	{name: "empty payload", payload: ``,
		field: `payload`, reason: `not a JSON object`},
	{name: "whitespace-only payload", payload: " \n\t ",
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing object", payload: withOK(``) + ` {}`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing array", payload: withOK(``) + `[]`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing number", payload: withOK(``) + ` 1`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing string", payload: withOK(``) + ` "x"`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing null", payload: withOK(``) + `null`,
		field: `payload`, reason: `not a JSON object`},
	{name: "nesting 300 deep in unknown field", payload: withOK(`,"deep":` + strings.Repeat("[", 299) + strings.Repeat("]", 299)),
		field: `deep`, reason: `unknown field`},
	{name: "top-level array", payload: `[{"subject":{"type":"contact","source":"h","id":"1"}}]`,
		field: `payload`, reason: `not a JSON object`},
	{name: "top-level null", payload: `null`,
		field: `payload`, reason: `not a JSON object`},
	{name: "top-level number", payload: `42`,
		field: `payload`, reason: `not a JSON object`},
	{name: "top-level string", payload: `"{}"`,
		field: `payload`, reason: `not a JSON object`},
	{name: "top-level true", payload: `true`,
		field: `payload`, reason: `not a JSON object`},
	{name: "empty object", payload: `{}`,
		field: `subject`, reason: `required`},
	{name: "syntax error in unknown field", payload: withOK(`,"bogus":[1,2,}`),
		field: `payload`, reason: `not a JSON object`},
	{name: "invalid escape", payload: withOK(`,"user_agent":"\x41"`),
		field: `payload`, reason: `not a JSON object`},
	{name: "short unicode escape", payload: withOK(`,"user_agent":"\u12"`),
		field: `payload`, reason: `not a JSON object`},
	{name: "raw control char in string", payload: withOK(",\"user_agent\":\"a\tb\""),
		field: `payload`, reason: `not a JSON object`},
	{name: "raw newline in key", payload: withOK(",\"a\nb\":1"),
		field: `payload`, reason: `not a JSON object`},
	{name: "raw control char before an escape", payload: withOK(",\"user_agent\":\"a\tb\\n\""),
		field: `payload`, reason: `not a JSON object`},
	{name: "raw control char in key before an escape", payload: withOK(",\"a\x01\\u0062\":1"),
		field: `payload`, reason: `not a JSON object`},
	{name: "raw control char before an escaped quote", payload: withOK(",\"bogus\":null,\"user_agent\":\"x\x1f\\\"y\""),
		field: `payload`, reason: `not a JSON object`},
	{name: "NaN", payload: withOK(`,"lead_id":NaN`),
		field: `payload`, reason: `not a JSON object`},
	{name: "Infinity", payload: withOK(`,"lead_id":Infinity`),
		field: `payload`, reason: `not a JSON object`},
	{name: "leading zero number", payload: withOK(`,"lead_id":01`),
		field: `payload`, reason: `not a JSON object`},
	{name: "plus number", payload: withOK(`,"lead_id":+1`),
		field: `payload`, reason: `not a JSON object`},
	{name: "bare minus", payload: withOK(`,"lead_id":-`),
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing dot", payload: withOK(`,"lead_id":1.`),
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing comma in object", payload: withOK(`,`),
		field: `payload`, reason: `not a JSON object`},
	{name: "single quotes", payload: `{'subject':1}`,
		field: `payload`, reason: `not a JSON object`},
	{name: "unquoted key", payload: `{subject:1}`,
		field: `payload`, reason: `not a JSON object`},
	{name: "True capitalised", payload: withOK(`,"bogus":True`),
		field: `payload`, reason: `not a JSON object`},
	{name: "invalid byte outside string", payload: withOK("\xff"),
		field: `payload`, reason: `not a JSON object`},
	{name: "unterminated string", payload: `{"subject":"abc`,
		field: `payload`, reason: `not a JSON object`},
	{name: "unknown top-level key", payload: withOK(`,"utm_source":"x"`),
		field: `utm_source`, reason: `unknown field`},
	{name: "keys are case-sensitive", payload: withOK(`,"Email":"jane@example.com"`),
		field: `Email`, reason: `unknown field`},
	{name: "empty key", payload: withOK(`,"":"x"`),
		field: `""`, reason: `unknown field`},
	{name: "long key", payload: withOK(`,"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk":"x"`),
		field: `"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk..."`, reason: `unknown field`},
	{name: "key with space", payload: withOK(`,"first name":"x"`),
		field: `"first name"`, reason: `unknown field`},
	{name: "unknown subject key", payload: `{"subject":{"type":"contact","source":"h","id":"1","Type":"x"},"captured_at":"2026-10-01T12:00:00Z"}`,
		field: `subject.Type`, reason: `unknown field`},
	{name: "unknown consent key", payload: withOK(`,"consent":{"ad_storage":"granted"}`),
		field: `consent.ad_storage`, reason: `unknown field`},
	{name: "unknown click object key", payload: withOK(`,"click_ids":{"gclid":{"id":"g","ts":"x"}}`),
		field: `click_ids.gclid.ts`, reason: `unknown field`},
	{name: "unknown click type", payload: withOK(`,"click_ids":{"GCLID":"x"}`),
		field: `click_ids.GCLID`, reason: `unknown click ID type (want one of gclid, gbraid, wbraid, fbc, fbp, fbclid, ttclid, msclkid, li_fat_id)`},
	{name: "unknown nested deeply", payload: withOK(`,"extra":{"a":{"b":[{"c":null}]}}`),
		field: `extra`, reason: `unknown field`},
	{name: "unknown key inside unknown-type click", payload: withOK(`,"click_ids":{"dclid":{"id":"x"}}`),
		field: `click_ids.dclid`, reason: `unknown click ID type (want one of gclid, gbraid, wbraid, fbc, fbp, fbclid, ttclid, msclkid, li_fat_id)`},
	{name: "first error in sorted order top-level", payload: `{"zeta":1,"alpha":1,"subject":{"type":"contact","source":"h","id":"1"}}`,
		field: `alpha`, reason: `unknown field`},
	{name: "first error in sorted order pii", payload: withOK(`,"phone":42,"email":42`),
		field: `email`, reason: `want a string, got a number`},
	{name: "first error in sorted order subject", payload: `{"subject":{"z":1,"id":true,"a":1}}`,
		field: `subject.a`, reason: `unknown field`},
	{name: "first error in sorted order clicks", payload: withOK(`,"click_ids":{"wbraid":1,"gclid":1}`),
		field: `click_ids.gclid`, reason: `want a string or an object {id, clicked_at}, got a number`},
	{name: "key order upper before lower", payload: withOK(`,"b":1,"B":1`),
		field: `B`, reason: `unknown field`},
	{name: "subject error before captured_at", payload: `{"subject":{"type":1},"captured_at":2}`,
		field: `captured_at`, reason: `want a string, got a number`},
	{name: "unknown key sorted after subject errors", payload: `{"subject":{"type":1},"zz":1}`,
		field: `subject.type`, reason: `want a string, got a number`},
}

// stricterThanEncodingJSON are the only payloads where Decode deliberately answers
// differently from the encoding/json implementation. That one read the first JSON value
// and then accepted anything after it that did not start another value (the recorded
// answer was a capture); now any data after the object is an error. And nesting deeper
// than fastjson.MaxDepth (300) is rejected as a whole, where encoding/json allowed 10000
// and reported the unknown field holding it; no capture that deep can be valid anyway.
var stricterThanEncodingJSON = []jsonCase{
	{name: "trailing bare word", payload: withOK(``) + ` x`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing closing bracket", payload: withOK(``) + `]`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing closing brace", payload: withOK(``) + `}`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing comma", payload: withOK(``) + `,`,
		field: `payload`, reason: `not a JSON object`},
	{name: "trailing invalid byte", payload: withOK(``) + "\xff",
		field: `payload`, reason: `not a JSON object`},
	{name: "nesting 301 deep in unknown field", payload: withOK(`,"deep":` + strings.Repeat("[", 300) + strings.Repeat("]", 300)),
		field: `payload`, reason: `not a JSON object`},
}

func TestDecodeTrickyJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range append(append([]jsonCase{}, sameAsEncodingJSON...), stricterThanEncodingJSON...) {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := identity.Decode([]byte(tt.payload), us)
			if tt.field != "" {
				var fe *identity.FieldError
				require.ErrorAs(t, err, &fe)
				require.Equal(t, tt.field, fe.Field)
				require.Equal(t, tt.reason, fe.Reason)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want.SubjectKey, got.SubjectKey, "SubjectKey")
			require.Equal(t, tt.want.CapturedAt, got.CapturedAt, "CapturedAt")
			require.Equal(t, tt.want.Clicks, got.Clicks, "Clicks")
			require.Equal(t, tt.want.Identifiers, got.Identifiers, "Identifiers")
			require.Equal(t, tt.want.IP, got.IP, "IP")
			require.Equal(t, tt.want.UserAgent, got.UserAgent, "UserAgent")
			require.Equal(t, tt.want.LeadID, got.LeadID, "LeadID")
			require.Equal(t, tt.want.Consent, got.Consent, "Consent")
		})
	}
}

// TestDecodeInvalidUTF8 checks the step fastjson lacks: each byte of a string that is not
// part of valid UTF-8 becomes one U+FFFD, as encoding/json decodes it; a real U+FFFD and
// valid multi-byte text stay as they are.
func TestDecodeInvalidUTF8(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, ua, want string }{
		{"lone byte", "Mozilla\xff/5.0", "Mozilla\uFFFD/5.0"},
		{"truncated sequence", "a\xe2\x82b", "a\uFFFD\uFFFDb"},
		{"encoded surrogate", "a\xed\xa0\x80", "a\uFFFD\uFFFD\uFFFD"},
		{"stray continuation after escape", "\\u00e9\xa9", "\u00e9\uFFFD"},
		{"valid text untouched", "caf\u00e9 \uFFFD \U0001F600", "caf\u00e9 \uFFFD \U0001F600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := identity.Decode([]byte(withOK(`,"user_agent":"`+tt.ua+`"`)), us)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.UserAgent)
		})
	}
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
