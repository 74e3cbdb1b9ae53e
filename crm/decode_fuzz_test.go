package crm_test

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/crm"
)

// fuzzDecode seeds a fuzz target with every fixture of format and checks, for any input,
// that Decode does not panic, that a failure is a *DecodeError saying what is wrong, and
// that a success holds only well-formed stage changes.
func fuzzDecode(f *testing.F, format string) {
	files, err := filepath.Glob(filepath.Join("testdata", format, "*"))
	require.NoError(f, err)
	for _, file := range files {
		b, err := os.ReadFile(file)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		dec, err := crm.Decode(format, payload, normalizer)
		if err != nil {
			var de *crm.DecodeError
			require.True(t, errors.As(err, &de), "error is %T", err)
			require.True(t, de.Field != "" || de.Reason != "", "error says nothing")
			require.Equal(t, format, de.Format)
			require.Empty(t, dec.Changes)
			return
		}
		checkDecoded(t, dec)
		for _, b := range dec.Bad {
			require.Equal(t, format, b.Format)
			require.GreaterOrEqual(t, b.Index, 0, "a batch error names its event")
		}
		for _, sc := range dec.Changes {
			// What the CLI prints must marshal and read back the same.
			out, err := json.Marshal(sc)
			require.NoError(t, err)
			var back crm.StageChange
			require.NoError(t, json.Unmarshal(out, &back))
			require.True(t, sc.OccurredAt.Equal(back.OccurredAt))
		}
	})
}

func FuzzDecodeCanonical(f *testing.F)  { fuzzDecode(f, crm.FormatCanonical) }
func FuzzDecodeHubSpot(f *testing.F)    { fuzzDecode(f, crm.FormatHubSpot) }
func FuzzDecodeSalesforce(f *testing.F) { fuzzDecode(f, crm.FormatSalesforce) }
func FuzzDecodePipedrive(f *testing.F)  { fuzzDecode(f, crm.FormatPipedrive) }
func FuzzDecodeClose(f *testing.F)      { fuzzDecode(f, crm.FormatClose) }
func FuzzDecodeAttio(f *testing.F)      { fuzzDecode(f, crm.FormatAttio) }

// FuzzDecodeIdentifiersNotEchoed puts arbitrary email and phone values into every format
// that carries them and checks that no error, drop note or output ever contains them.
func FuzzDecodeIdentifiersNotEchoed(f *testing.F) {
	f.Add("jane.doe@example.com", "(415) 555-0132")
	f.Add("not an email", "12")
	f.Add("a@b", "+44 20 7946 0000")
	f.Add("\"quoted\"@example.com", "☎ 555")
	f.Fuzz(func(t *testing.T, email, phone string) {
		if len(email) < 6 || len(phone) < 6 {
			t.Skip("too short to tell apart from the surrounding text")
		}
		render := func(format, email, phone string) string {
			e, _ := json.Marshal(email)
			p, _ := json.Marshal(phone)
			var payload string
			switch format {
			case crm.FormatCanonical:
				payload = `{"source":"relay","object_type":"lead","object_id":"1","stage":"mql",` +
					`"occurred_at":"2024-05-01T10:00:00Z","email":` + string(e) + `,"phone":` + string(p) + `}`
			default:
				payload = `{"ChangeEventHeader":{"entityName":"Lead","changeType":"CREATE","recordIds":["00Q1"],` +
					`"commitTimestamp":1714557600000},"Status":"Open","Email":` + string(e) + `,"Phone":` + string(p) + `}`
			}
			dec, err := crm.Decode(format, []byte(payload), normalizer)
			var b strings.Builder
			if err != nil {
				b.WriteString(err.Error())
			}
			for i := range dec.Changes {
				dec.Changes[i].Identifiers = nil // hashes: hex that may contain anything short
			}
			out, merr := json.Marshal(dec)
			require.NoError(t, merr)
			b.Write(out)
			return b.String()
		}
		for _, format := range []string{crm.FormatCanonical, crm.FormatSalesforce} {
			baseline := render(format, "", "")
			got := render(format, email, phone)
			for _, raw := range []string{email, phone} {
				enc, _ := json.Marshal(raw)
				for _, form := range []string{raw, strings.Trim(string(enc), `"`)} {
					if strings.Contains(baseline, form) {
						continue // the text is in every output (a field name, the time): not an echo
					}
					require.NotContains(t, got, form, "%s echoed a raw identifier", format)
				}
			}
		}
	})
}

// FuzzDecodeFieldValues puts arbitrary values into the fields every format reads (ids,
// stage, amount, currency, times) of otherwise valid messages, so the fuzzer spends its
// time in field handling rather than in JSON syntax. Every success must hold the
// invariants of checkDecoded, including reading back as canonical input.
func FuzzDecodeFieldValues(f *testing.F) {
	f.Add("9001", "closedwon", "1500.50", "EUR", "1714557600000", "2024-05-01T10:00:00Z")
	f.Add(" 1", "  ", "-1", "eu", "-5", "2024-05-01 10:00:00")
	f.Add("006*", "Closed Won", "1e400", "usd", "1.7e12", "0000-01-01T00:00:00-01:00")
	f.Add("\x00", "\xff", "0x10", "€€€", "99999999999999999999", "9999-12-31T23:59:59-23:59")
	f.Fuzz(func(t *testing.T, id, stage, amount, currency, epoch, rfc string) {
		js := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		payloads := map[string][]string{
			crm.FormatCanonical: {
				`{"source":"relay","object_type":"deal","object_id":` + js(id) + `,"stage":` + js(stage) +
					`,"occurred_at":` + js(rfc) + `,"amount":` + js(amount) + `,"currency":` + js(currency) +
					`,"contact_ids":[` + js(id) + `],"properties":{` + js(stage) + `:` + js(amount) + `}}`,
				`{"source":"relay","object_type":"deal","object_id":` + js(id) + `,"stage":"s","occurred_at":"2024-05-01T10:00:00Z","amount":` + amount + `}`,
			},
			crm.FormatHubSpot: {
				`[{"subscriptionType":"deal.propertyChange","propertyName":"dealstage","objectId":` + js(id) +
					`,"propertyValue":` + js(stage) + `,"occurredAt":` + js(epoch) + `,"portalId":` + js(id) + `}]`,
				`[{"subscriptionType":"deal.propertyChange","propertyName":"dealstage","objectId":1,"propertyValue":"x","occurredAt":` + epoch + `}]`,
			},
			crm.FormatSalesforce: {
				`{"ChangeEventHeader":{"entityName":"Opportunity","changeType":"UPDATE","recordIds":[` + js(id) +
					`],"commitTimestamp":` + js(epoch) + `,"changedFields":["StageName","Amount"]},"StageName":` + js(stage) +
					`,"Amount":` + js(amount) + `,"CurrencyIsoCode":` + js(currency) + `,"ContactId":` + js(id) + `,"IsWon":true}`,
				`<Envelope><Body><notifications><OrganizationId>` + xmlText(id) + `</OrganizationId><Notification><Id>1</Id>` +
					`<sObject xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="sf:Opportunity"><Id>` + xmlText(id) +
					`</Id><StageName>` + xmlText(stage) + `</StageName><Amount>` + xmlText(amount) + `</Amount><CurrencyIsoCode>` +
					xmlText(currency) + `</CurrencyIsoCode><LastModifiedDate>` + xmlText(rfc) + `</LastModifiedDate></sObject>` +
					`</Notification></notifications></Body></Envelope>`,
			},
			crm.FormatPipedrive: {
				`{"event":"updated.deal","meta":{"timestamp":` + js(epoch) + `},"current":{"id":` + js(id) + `,"stage_id":` + js(stage) +
					`,"pipeline_id":` + js(id) + `,"status":"won","value":` + js(amount) + `,"currency":` + js(currency) +
					`,"person_id":` + js(id) + `,"won_time":` + js(rfc) + `},"previous":{"stage_id":1,"status":"open"}}`,
				`{"meta":{"action":"change","entity":"deal","timestamp":` + js(rfc) + `},"data":{"id":1,"stage_id":` + js(id) +
					`,"status":"open","value":` + js(amount) + `},"previous":{"stage_id":` + js(stage) + `}}`,
			},
			crm.FormatClose: {
				`{"event":{"object_type":"opportunity","action":"updated","date_updated":` + js(rfc) +
					`,"changed_fields":["status_id"],"data":{"id":` + js(id) + `,"status_id":` + js(stage) +
					`,"status_type":"won","value":` + js(amount) + `,"value_currency":` + js(currency) +
					`,"lead_id":` + js(id) + `,"contact_id":` + js(id) + `}}}`,
				`{"event":{"object_type":"opportunity","action":"created","date_created":"2024-05-01T10:00:00.000000","data":{"id":"o","status_id":"s","value":` + amount + `}}}`,
			},
		}
		for format, list := range payloads {
			for _, p := range list {
				dec, err := crm.Decode(format, []byte(p), normalizer)
				if err != nil {
					var de *crm.DecodeError
					require.True(t, errors.As(err, &de), "error is %T", err)
					require.NotEmpty(t, de.Reason)
					continue
				}
				checkDecoded(t, dec)
			}
		}
	})
}

func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
