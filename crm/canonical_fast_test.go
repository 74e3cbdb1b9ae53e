package crm

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

var splitObjectSeeds = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":"x","b":[1,{"c":"]}"}],"d":{"e":null},"f":true,"g":-1.5e3}`,
	"{\n\t\"a\" : \"x\\\"y\" ,\r\n\"b\":\"\\\\\"}", `{"a":1,"a":2}`, `{"\u00e9":1}`, `{"é":1}`, `{"a\"b":1}`,
	`[1]`, `"s"`, `null`, `{"a":"}"}`, `{"a":[]}`,
}

// splitObject must give what json.Unmarshal into map[string]json.RawMessage gives, or
// decline.
func TestSplitObjectAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range splitObjectSeeds {
		checkSplitObject(t, []byte(s))
	}
	m, ok := splitObject([]byte(`{"source":"bench","contact_ids":["c1"]}`))
	require.True(t, ok, "plain keys are split")
	require.Equal(t, `["c1"]`, string(m["contact_ids"]))
}

func FuzzSplitObject(f *testing.F) {
	for _, s := range splitObjectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSplitObject(t, []byte(s)) })
}

func checkSplitObject(t *testing.T, payload []byte) {
	if !json.Valid(payload) {
		return // canonicalObject never splits what json.Valid refuses
	}
	got, ok := splitObject(payload)
	var want map[string]json.RawMessage
	werr := json.Unmarshal(payload, &want)
	if !ok {
		return
	}
	require.NoError(t, werr, "%q", payload)
	require.Equal(t, len(want), len(got), "%q", payload)
	for k, v := range want {
		require.Equal(t, string(v), string(got[k]), "%q key %q", payload, k)
	}
}
