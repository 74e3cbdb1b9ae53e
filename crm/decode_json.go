package crm

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// Field-level JSON helpers shared by the JSON decoders. Each takes the raw value of one
// field and returns a *DecodeError naming that field; none echoes the value it rejects.

// decMaxText bounds ids, stages and other short strings: long enough for any CRM's
// identifiers and stage names, short enough to keep keys and log lines sane.
const decMaxText = 512

// decJSONKind names the JSON type of raw for error messages.
func decJSONKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// decIsNull reports whether raw is absent or JSON null.
func decIsNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// decSyntax turns a JSON parse error into a reason that carries a position, never content.
func decSyntax(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "malformed JSON at byte " + strconv.FormatInt(se.Offset, 10)
	}
	return "malformed JSON"
}

// decParse checks that payload is one well-formed JSON value and returns it.
func decParse(payload []byte) (json.RawMessage, *DecodeError) {
	var raw json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, decodeErr("", decSyntax(err))
	}
	return raw, nil
}

// decObject unmarshals raw as a JSON object of raw fields.
func decObject(raw json.RawMessage, field string) (map[string]json.RawMessage, *DecodeError) {
	if k := decJSONKind(raw); k != "an object" {
		return nil, decodeErr(field, "must be a JSON object, got %s", k)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, decodeErr(field, decSyntax(err))
	}
	return m, nil
}

// decArray unmarshals raw as a JSON array of raw elements.
func decArray(raw json.RawMessage, field string) ([]json.RawMessage, *DecodeError) {
	if k := decJSONKind(raw); k != "an array" {
		return nil, decodeErr(field, "must be a JSON array, got %s", k)
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, decodeErr(field, decSyntax(err))
	}
	return a, nil
}

// decString reads a JSON string (null or absent gives ""), bounded to decMaxText.
func decString(raw json.RawMessage, field string) (string, *DecodeError) {
	return decStringMax(raw, field, decMaxText)
}

func decStringMax(raw json.RawMessage, field string, max int) (string, *DecodeError) {
	if decIsNull(raw) {
		return "", nil
	}
	if k := decJSONKind(raw); k != "a string" {
		return "", decodeErr(field, "must be a string, got %s", k)
	}
	s, ok := decPlainString(raw)
	if !ok {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", decodeErr(field, decSyntax(err))
		}
	}
	if len(s) > max {
		return "", decodeErr(field, "is %d bytes long, over the %d-byte limit", len(s), max)
	}
	return s, nil
}

// decPlainString reads a JSON string of printable ASCII without escapes (most values)
// without encoding/json; ok is false for any other raw value, which json.Unmarshal then
// reads (to the same result where both apply).
func decPlainString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "", false
		}
	}
	return string(inner), true
}

// decRequiredString reads a JSON string that must be present and not blank.
func decRequiredString(raw json.RawMessage, field string) (string, *DecodeError) {
	s, err := decString(raw, field)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(s) == "" {
		return "", decodeErr(field, "required")
	}
	return s, nil
}

// decID reads an identifier given as a JSON string or an integer JSON number and returns
// its text ("" when null or absent). Fractions and exponents are refused: an id is exact.
func decID(raw json.RawMessage, field string) (string, *DecodeError) {
	if decIsNull(raw) {
		return "", nil
	}
	switch k := decJSONKind(raw); k {
	case "a string":
		s, err := decString(raw, field)
		if err != nil {
			return "", err
		}
		return s, decCheckID(s, field)
	case "a number":
		text := string(bytes.TrimSpace(raw))
		if strings.ContainsAny(text, ".eE") {
			return "", decodeErr(field, "must be a string or a whole number, got a fractional number")
		}
		if len(text) > 64 {
			return "", decodeErr(field, "is too long")
		}
		return text, nil
	default:
		return "", decodeErr(field, "must be a string or a whole number, got %s", k)
	}
}

// decCheckID checks an identifier's text, whatever it came in: no surrounding spaces, no
// control characters, at most decMaxText bytes.
func decCheckID(s, field string) *DecodeError {
	switch {
	case len(s) > decMaxText:
		return decodeErr(field, "is over the %d-byte limit", decMaxText)
	case strings.TrimSpace(s) != s:
		return decodeErr(field, "has leading or trailing spaces")
	case strings.ContainsFunc(s, decIsControl):
		return decodeErr(field, "contains a control character")
	}
	return nil
}

func decIsControl(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }

// decRequiredID reads an identifier that must be present.
func decRequiredID(raw json.RawMessage, field string) (string, *DecodeError) {
	s, err := decID(raw, field)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", decodeErr(field, "required")
	}
	return s, nil
}

// decDecimal reads a decimal given as a JSON number or a numeric string. It returns nil
// when the field is null, absent or an empty string. Negative amounts are refused: a
// stage change carries a deal's value, and a retraction is a status, not a negative sum.
func decDecimal(raw json.RawMessage, field string) (*decimal.Decimal, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	var text string
	switch k := decJSONKind(raw); k {
	case "a number":
		text = string(bytes.TrimSpace(raw))
	case "a string":
		s, err := decString(raw, field)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		text = strings.TrimSpace(s)
	default:
		return nil, decodeErr(field, "must be a decimal number or a numeric string, got %s", k)
	}
	return decDecimalText(text, field)
}

// decDecimalText parses a decimal from text (JSON, XML or CSV) with the same limits.
func decDecimalText(text, field string) (*decimal.Decimal, *DecodeError) {
	if len(text) > 64 {
		return nil, decodeErr(field, "is not a decimal number (too long)")
	}
	if strings.ContainsAny(text, "xXpP_") { // hex or Go-style literals decimal would read
		return nil, decodeErr(field, "is not a decimal number")
	}
	d, err := decimal.NewFromString(text)
	if err != nil {
		return nil, decodeErr(field, "is not a decimal number")
	}
	// Bound the exponent so that later arithmetic and formatting stay cheap.
	if e := d.Exponent(); e < -18 || e > 18 {
		return nil, decodeErr(field, "is out of range")
	}
	if d.IsNegative() {
		return nil, decodeErr(field, "must not be negative")
	}
	return &d, nil
}

// decCurrency checks an ISO 4217 code (three letters) and returns it upper-cased;
// "" stays "".
func decCurrency(s, field string) (string, *DecodeError) {
	if s == "" {
		return "", nil
	}
	if len(s) != 3 {
		return "", decodeErr(field, "must be a three-letter ISO 4217 code")
	}
	for i := 0; i < 3; i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') {
			return "", decodeErr(field, "must be a three-letter ISO 4217 code")
		}
	}
	return strings.ToUpper(s), nil
}

// Valid times are from 1970 to 9999: earlier is a zero value gone wrong, later does not
// fit RFC 3339.
var (
	decMinTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	decMaxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

func decTimeInRange(t time.Time, field string) (time.Time, *DecodeError) {
	t = t.UTC()
	if t.Before(decMinTime) || t.After(decMaxTime) {
		return time.Time{}, decodeErr(field, "is out of range (1970 to 9999)")
	}
	return t, nil
}

// decRFC3339 parses an RFC 3339 time and returns it in UTC.
func decRFC3339(s, field string) (time.Time, *DecodeError) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, decodeErr(field, "must be an RFC 3339 time such as 2024-05-01T10:00:00Z")
	}
	return decTimeInRange(t, field)
}

// decEpochMillis reads epoch milliseconds given as a JSON number or a numeric string.
func decEpochMillis(raw json.RawMessage, field string) (time.Time, *DecodeError) {
	n, err := decEpochNumber(raw, field, "epoch milliseconds")
	if err != nil {
		return time.Time{}, err
	}
	return decTimeInRange(time.UnixMilli(n), field)
}

// decEpochNumber reads a whole number given as a JSON number or numeric string.
func decEpochNumber(raw json.RawMessage, field, what string) (int64, *DecodeError) {
	if decIsNull(raw) {
		return 0, decodeErr(field, "required")
	}
	var text string
	switch k := decJSONKind(raw); k {
	case "a number":
		text = string(bytes.TrimSpace(raw))
	case "a string":
		s, err := decString(raw, field)
		if err != nil {
			return 0, err
		}
		text = s
	default:
		return 0, decodeErr(field, "must be %s, got %s", what, k)
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		// Some relays write integral numbers as 1.7e12; accept them when exact.
		f, ferr := strconv.ParseFloat(text, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, decodeErr(field, "must be %s", what)
		}
		n = int64(f)
	}
	return n, nil
}

// decBool reads a JSON boolean (or "true"/"false" string). known is false when the field
// is null or absent.
func decBool(raw json.RawMessage, field string) (value, known bool, err *DecodeError) {
	if decIsNull(raw) {
		return false, false, nil
	}
	var b bool
	if e := json.Unmarshal(raw, &b); e == nil {
		return b, true, nil
	}
	var s string
	if e := json.Unmarshal(raw, &s); e == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			return true, true, nil
		case "false":
			return false, true, nil
		}
	}
	return false, false, decodeErr(field, "must be true or false, got %s", decJSONKind(raw))
}

// decDecimalSigned returns text as a plain decimal string, sign allowed, exponent bounded.
func decDecimalSigned(text, field string) (string, *DecodeError) {
	if len(text) > 64 {
		return "", decodeErr(field, "is not a decimal number (too long)")
	}
	d, err := decimal.NewFromString(text)
	if err != nil {
		return "", decodeErr(field, "is not a decimal number")
	}
	if e := d.Exponent(); e < -18 || e > 18 {
		return "", decodeErr(field, "is out of range")
	}
	return d.String(), nil
}
