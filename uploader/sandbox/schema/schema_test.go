package schema_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/uploader/sandbox/schema"
)

// The embedded facts are a copy of the repository's testdata/schemas; keep them equal.
func TestFactsMatchTestdata(t *testing.T) {
	t.Parallel()
	for _, name := range []string{schema.GoogleDataManager, schema.GoogleAds, schema.Meta, schema.TikTok, schema.Microsoft, schema.LinkedIn} {
		embedded, err := os.ReadFile(filepath.Join("facts", name+".json"))
		require.NoError(t, err)
		repo, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "schemas", name+".json"))
		require.NoError(t, err)
		require.True(t, bytes.Equal(embedded, repo), "%s: copy testdata/schemas/%s.json to uploader/sandbox/schema/facts/", name, name)
	}
}

func TestViolations(t *testing.T) {
	t.Parallel()
	const hash = "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"
	dm := `{"destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1234567890"},"productDestinationId":"1"}],` +
		`"encoding":"HEX","events":[{"transactionId":"t","eventTimestamp":"2026-10-14T13:02:11Z"%s}]}`
	cases := []struct {
		name, schema, body string
		want               string // substring of one violation; "" = valid
	}{
		{"valid data manager", schema.GoogleDataManager, strings.Replace(dm, "%s", "", 1), ""},
		{"proto names accepted", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"event_source":"OTHER"`, 1), ""},
		{"unknown field", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"colour":"red"`, 1), "events[0].colour: unknown field"},
		{"naive timestamp", schema.GoogleDataManager, strings.Replace(strings.Replace(dm, "%s", "", 1), "13:02:11Z", "13:02:11", 1), "RFC 3339"},
		{"enum value", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"eventSource":"CRM"`, 1), "must be one of"},
		{"unspecified enum is not an input", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"eventSource":"EVENT_SOURCE_UNSPECIFIED"`, 1), "must be one of"},
		{"oneof twice", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"userData":{"userIdentifiers":[{"emailAddress":"`+hash+`","phoneNumber":"`+hash+`"}]}`, 1), "oneof"},
		{"too many identifiers", schema.GoogleDataManager, strings.Replace(dm, "%s", `,"userData":{"userIdentifiers":[`+strings.Repeat(`{"emailAddress":"`+hash+`"},`, 10)+`{"emailAddress":"`+hash+`"}]}`, 1), "at most 10"},
		{"required missing", schema.GoogleDataManager, `{"events":[{"eventTimestamp":"2026-10-14T13:02:11Z"}]}`, "destinations: required"},
		{"number for a string", schema.GoogleDataManager, strings.Replace(strings.Replace(dm, "%s", "", 1), `"productDestinationId":"1"`, `"productDestinationId":1`, 1), "must be a string"},
		{"meta valid", schema.Meta, `{"data":[{"event_name":"x","event_time":1792314000,"action_source":"system_generated","user_data":{"em":["` + hash + `"],"lead_id":123456789012345}}]}`, ""},
		{"meta non-hex hash", schema.Meta, `{"data":[{"event_name":"x","event_time":1792314000,"action_source":"system_generated","user_data":{"em":["pat@example.com"]}}]}`, "SHA-256"},
		{"meta event_time as string", schema.Meta, `{"data":[{"event_name":"x","event_time":"1792314000","action_source":"system_generated","user_data":{}}]}`, "must be an integer"},
		{"meta action_source", schema.Meta, `{"data":[{"event_name":"x","event_time":1,"action_source":"crm","user_data":{}}]}`, "must be one of"},
		{"meta custom_data is open", schema.Meta, `{"data":[{"event_name":"x","event_time":1,"action_source":"other","user_data":{},"custom_data":{"anything":1}}]}`, ""},
		{"tiktok single string for a list", schema.TikTok, `{"event_source":"crm","event_source_id":"1","data":[{"event":"x","event_time":1,"user":{"email":"` + hash + `"}}]}`, ""},
		{"tiktok event_source enum", schema.TikTok, `{"event_source":"server","event_source_id":"1","data":[{"event":"x","event_time":1}]}`, "must be one of"},
		{"ads customerId lives in the path", schema.GoogleAds, `{"conversions":[{"orderId":"o"}],"partialFailure":true}`, ""},
		{"microsoft valid", schema.Microsoft, `{"OfflineConversions":[{"ConversionName":"Closed Won","ConversionTime":"2026-10-14T13:02:11Z","HashedEmailAddress":"` + hash + `"}]}`, ""},
		{"microsoft time without zone", schema.Microsoft, `{"OfflineConversions":[{"ConversionName":"x","ConversionTime":"2026-10-14T13:02:11"}]}`, "RFC 3339"},
		{"microsoft name required", schema.Microsoft, `{"OfflineConversions":[{"ConversionTime":"2026-10-14T13:02:11Z"}]}`, "ConversionName: required"},
		{"linkedin valid", schema.LinkedIn, `{"elements":[{"conversion":"urn:lla:llaPartnerConversion:1","conversionHappenedAt":1791982931000,"conversionValue":{"currencyCode":"EUR","amount":"1.0"},"user":{"userIds":[{"idType":"SHA256_EMAIL","idValue":"` + hash + `"}]}}]}`, ""},
		{"linkedin seconds for millis", schema.LinkedIn, `{"elements":[{"conversion":"c","conversionHappenedAt":1791982931,"user":{"userIds":[]}}]}`, "milliseconds"},
		{"linkedin amount as number", schema.LinkedIn, `{"elements":[{"conversion":"c","conversionHappenedAt":1791982931000,"conversionValue":{"currencyCode":"EUR","amount":1},"user":{"userIds":[]}}]}`, "must be a string"},
		{"linkedin id type", schema.LinkedIn, `{"elements":[{"conversion":"c","conversionHappenedAt":1791982931000,"user":{"userIds":[{"idType":"EMAIL","idValue":"x"}]}}]}`, "must be one of"},
		{"ads consent enum", schema.GoogleAds, `{"conversions":[{"consent":{"adUserData":"CONSENT_GRANTED"}}],"partialFailure":true}`, "must be one of"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := schema.Load(tc.schema)
			require.NoError(t, err)
			vs := s.ValidateJSON("", []byte(tc.body))
			if tc.want == "" {
				require.Empty(t, vs)
				return
			}
			require.NotEmpty(t, vs)
			all := ""
			for _, v := range vs {
				all += v.String() + "\n"
			}
			require.Contains(t, all, tc.want)
		})
	}
}
