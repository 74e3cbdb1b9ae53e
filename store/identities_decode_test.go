package store

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
)

// decodeStringMap must read every stored identifiers column exactly as encoding/json does.
func TestDecodeStringMapAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`{}`,
		`{"email":"ab12"}`,
		`{"email":"ab12","phone/e164":"cd34","email/google":"ef56"}`,
		`{"a":"1","a":"2"}`,
		`{"a":""}`,
		`{ "a" : "1" }`,
		`{"a":"x\"y"}`,
		`{"a":"\u00e9"}`,
		`{"a":"é"}`,
		`{"a":"<&>"}`,
		"{\"a\":\"\xff\"}",
		`null`,
	} {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			var want pii.Set
			require.NoError(t, json.Unmarshal([]byte(raw), &want))
			got, err := decodeStringMap(raw)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
	for _, raw := range []string{`{"a":1}`, `{"a":"1",}`, `{"a"}`, `{"a":"1"`, `["a"]`, `{"a":"1"}x`} {
		t.Run("malformed "+raw, func(t *testing.T) {
			t.Parallel()
			_, err := decodeStringMap(raw)
			require.Error(t, err)
		})
	}
}

func FuzzDecodeStringMap(f *testing.F) {
	for _, s := range []string{`{}`, `{"email":"ab12","phone/e164":"cd34"}`, `{"a":"x\"y"}`, `{"a":"1",}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var want pii.Set
		werr := json.Unmarshal([]byte(raw), &want)
		got, err := decodeStringMap(raw)
		if raw == "" {
			require.NoError(t, err)
			require.Nil(t, got)
			return
		}
		require.Equal(t, werr == nil, err == nil, "error agreement for %q", raw)
		if werr == nil {
			require.Equal(t, want, got)
		}
	})
}
