package crm_test

import (
	"encoding/json"
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
