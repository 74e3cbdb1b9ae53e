package store

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// appendIdentityJSON appends json.Marshal(id) to b, byte for byte, without reflection:
// WriteBatch encodes one identity snapshot per conversion.
func appendIdentityJSON(b []byte, id Identity) ([]byte, error) {
	var err error
	b = append(b, `{"subject_key":`...)
	b = appendJSONString(b, id.SubjectKey)
	if len(id.Clicks) > 0 {
		b = append(b, `,"clicks":[`...)
		for i, c := range id.Clicks {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":`...)
			b = appendJSONString(b, c.Type)
			b = append(b, `,"id":`...)
			b = appendJSONString(b, c.ID)
			b = append(b, `,"at":`...)
			if b, err = appendJSONTime(b, c.At); err != nil {
				return nil, err
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(id.Identifiers) > 0 {
		b = append(b, `,"identifiers":{`...)
		for i, k := range slices.Sorted(maps.Keys(id.Identifiers)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, id.Identifiers[k])
		}
		b = append(b, '}')
	}
	for _, f := range [...]struct{ name, v string }{{`,"ip":`, id.IP}, {`,"user_agent":`, id.UserAgent}, {`,"lead_id":`, id.LeadID}} {
		if f.v != "" {
			b = append(b, f.name...)
			b = appendJSONString(b, f.v)
		}
	}
	b = append(b, `,"consent":{`...)
	sep := false
	for _, f := range [...]struct{ name, v string }{{`"ad_user_data":`, id.Consent.AdUserData}, {`"ad_personalization":`, id.Consent.AdPersonalization}} {
		if f.v != "" {
			if sep {
				b = append(b, ',')
			}
			b = append(b, f.name...)
			b = appendJSONString(b, f.v)
			sep = true
		}
	}
	if sep {
		b = append(b, ',')
	}
	b = append(b, `"captured_at":`...)
	if b, err = appendJSONTime(b, id.Consent.CapturedAt); err != nil {
		return nil, err
	}
	b = append(b, `},"updated_at":`...)
	if b, err = appendJSONTime(b, id.UpdatedAt); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendStringMapJSON appends json.Marshal(m) of a string map, keys sorted; a nil map as
// {} (the column's empty value).
func appendStringMapJSON(b []byte, m map[string]string) []byte {
	b, _ = appendMapJSON(b, m, func(b []byte, v string) ([]byte, error) { return appendJSONString(b, v), nil })
	return b
}

// appendStampsJSON appends json.Marshal(m) of a map of times, keys sorted.
func appendStampsJSON(b []byte, m map[string]time.Time) ([]byte, error) {
	return appendMapJSON(b, m, appendJSONTime)
}

// appendMapJSON appends m as a JSON object, keys sorted as json.Marshal sorts them, each
// value written by value.
func appendMapJSON[V any](b []byte, m map[string]V, value func([]byte, V) ([]byte, error)) ([]byte, error) {
	var err error
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		if b, err = value(b, m[k]); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendStringsJSON appends json.Marshal(v) of a non-nil []string.
func appendStringsJSON(b []byte, v []string) []byte {
	b = append(b, '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as encoding/json writes it: plain printable ASCII directly,
// anything that needs escaping (quotes, backslashes, control characters, <, >, &,
// non-ASCII) through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain[s[i]] {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// jsonPlain marks the bytes encoding/json writes as they are inside a string.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONTime appends t as time.Time.MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		q, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, q...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}
