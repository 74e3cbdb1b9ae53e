package crm

import "encoding/json"

// splitObject splits a JSON object that json.Valid accepted into its raw fields, as
// json.Unmarshal into map[string]json.RawMessage would (the last of repeated keys wins;
// values are the exact bytes of each value, sharing payload's memory). ok is false when a
// key is not plain printable ASCII (escapes, other bytes) or payload is not an object;
// the caller then uses encoding/json.
func splitObject(payload []byte) (map[string]json.RawMessage, bool) {
	i := skipSpace(payload, 0)
	if i >= len(payload) || payload[i] != '{' {
		return nil, false
	}
	m := make(map[string]json.RawMessage, 16)
	i = skipSpace(payload, i+1)
	if i < len(payload) && payload[i] == '}' {
		return m, true
	}
	for i < len(payload) {
		// key
		if payload[i] != '"' {
			return nil, false
		}
		j := i + 1
		for ; j < len(payload) && payload[j] != '"'; j++ {
			if c := payload[j]; c < 0x20 || c > 0x7e || c == '\\' {
				return nil, false
			}
		}
		if j >= len(payload) {
			return nil, false
		}
		key := string(payload[i+1 : j])
		i = skipSpace(payload, j+1)
		if i >= len(payload) || payload[i] != ':' {
			return nil, false
		}
		i = skipSpace(payload, i+1)
		end, ok := skipValue(payload, i)
		if !ok {
			return nil, false
		}
		m[key] = json.RawMessage(payload[i:end:end])
		i = skipSpace(payload, end)
		if i >= len(payload) {
			return nil, false
		}
		switch payload[i] {
		case ',':
			i = skipSpace(payload, i+1)
		case '}':
			return m, true
		default:
			return nil, false
		}
	}
	return nil, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the valid JSON value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j, j > i
			}
			j++
		}
		return j, j > i
	}
}

// skipString returns the end of the JSON string starting at b[i] (just past its quote).
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}
