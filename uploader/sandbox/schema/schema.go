// Package schema checks JSON request bodies against the project's schema facts: one JSON
// file per platform API (field names as sent, types, enums, required fields, oneofs and
// limits) taken from the official protos and SDKs. The sandbox rejects bodies that do not
// fit, and the platform packages' tests check every body they build.
//
// The facts are embedded from facts/*.json, a copy of testdata/schemas/*.json at the
// repository root (a test keeps the two identical).
package schema

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed facts/*.json
var facts embed.FS

// Names of the embedded schema files (without .json).
const (
	GoogleDataManager = "google_datamanager_v1"
	GoogleAds         = "google_ads_upload"
	Meta              = "meta_capi"
	TikTok            = "tiktok_events"
	Microsoft         = "microsoft_offline_conversions"
	LinkedIn          = "linkedin_conversions"
)

// Field is one field of a message as the facts describe it.
type Field struct {
	Type      string  `json:"type"`
	Repeated  bool    `json:"repeated"`
	Oneof     *string `json:"oneof"`
	Required  *bool   `json:"required"`
	ProtoName string  `json:"proto_name"`
	Format    string  `json:"format"`
}

// Message is one message type.
type Message struct {
	Fields map[string]Field `json:"fields"`
}

// Schema is one API's request schema.
type Schema struct {
	Name     string
	Root     string                 `json:"root"`
	Messages map[string]Message     `json:"messages"`
	Enums    map[string][]string    `json:"enums"`
	Limits   map[string]int         `json:"limits"`
	EnumMeta map[string]enumNumbers `json:"enum_meta"`

	proto bool            // Google proto3 JSON: proto names accepted, int64 as strings, enum numbers
	open  map[string]bool // messages that accept extra keys
}

type enumNumbers struct {
	Numbers map[string]int `json:"numbers"`
}

// Load returns the named embedded schema. Three documented deviations from the raw facts
// are applied here: the Google Ads customerId is not required in the body (it is in the
// URL path), Meta's CustomData accepts any extra key (its SDK merges custom properties),
// and Meta's UserData.lead_id may be an integer (the Conversion Leads docs send the 15–17
// digit lead id as a JSON number; the SDK types it as a string).
func Load(name string) (*Schema, error) {
	b, err := facts.ReadFile("facts/" + name + ".json")
	if err != nil {
		return nil, fmt.Errorf("schema %q: %w", name, err)
	}
	s := &Schema{Name: name, open: map[string]bool{}}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("schema %q: %w", name, err)
	}
	switch name {
	case GoogleDataManager:
		s.proto = true
	case GoogleAds:
		s.proto = true
		// customerId is bound in the URL path (customers/{customer_id}:upload...), so the
		// body need not carry it.
		for _, root := range []string{"UploadClickConversionsRequest", "UploadConversionAdjustmentsRequest"} {
			if m, ok := s.Messages[root]; ok {
				f := m.Fields["customerId"]
				f.Required = nil
				m.Fields["customerId"] = f
			}
		}
	case Meta:
		s.open["CustomData"] = true
		ud := s.Messages["UserData"]
		f := ud.Fields["lead_id"]
		f.Type = "string|int64"
		ud.Fields["lead_id"] = f
	}
	return s, nil
}

// MustLoad is Load for embedded names known to exist; it panics on error.
func MustLoad(name string) *Schema {
	s, err := Load(name)
	if err != nil {
		panic(err)
	}
	return s
}

// Violation is one way a body does not fit the schema.
type Violation struct {
	Path    string // JSON path, e.g. "events[3].userData.userIdentifiers[0].emailAddress"
	Problem string
}

func (v Violation) String() string { return v.Path + ": " + v.Problem }

// ValidateJSON decodes body and validates it against message root ("" = the schema's root).
// It returns every violation found, in a stable order.
func (s *Schema) ValidateJSON(root string, body []byte) []Violation {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []Violation{{Path: "$", Problem: "invalid JSON: " + err.Error()}}
	}
	if dec.More() {
		return []Violation{{Path: "$", Problem: "trailing data after the JSON value"}}
	}
	return s.Validate(root, v)
}

// Validate validates a value decoded with json.Decoder.UseNumber.
func (s *Schema) Validate(root string, v any) []Violation {
	if root == "" {
		root = s.Root
	}
	var out []Violation
	s.message(root, "", v, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (s *Schema) message(name, path string, v any, out *[]Violation) {
	add := func(p, format string, args ...any) {
		*out = append(*out, Violation{Path: p, Problem: fmt.Sprintf(format, args...)})
	}
	m, ok := s.Messages[name]
	if !ok {
		add(path, "schema has no message %s", name)
		return
	}
	obj, ok := v.(map[string]any)
	if !ok {
		add(pathOr(path), "must be an object (%s), got %s", name, kind(v))
		return
	}
	byProto := map[string]string{}
	if s.proto {
		for k, f := range m.Fields {
			if f.ProtoName != "" {
				byProto[f.ProtoName] = k
			}
		}
	}
	seen := map[string]bool{}
	oneofSet := map[string]string{}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := obj[k]
		fname := k
		f, ok := m.Fields[k]
		if !ok && s.proto {
			if alias, found := byProto[k]; found {
				fname, f, ok = alias, m.Fields[alias], true
			}
		}
		if !ok {
			if !s.open[name] {
				add(join(path, k), "unknown field (not in %s)", name)
			}
			continue
		}
		if seen[fname] {
			add(join(path, k), "field given twice (JSON and proto name)")
		}
		seen[fname] = true
		if val == nil {
			continue // JSON null = absent
		}
		if f.Oneof != nil {
			if other, dup := oneofSet[*f.Oneof]; dup {
				add(join(path, k), "oneof %q already set by %s", *f.Oneof, other)
			}
			oneofSet[*f.Oneof] = fname
		}
		if f.Repeated {
			arr, isArr := val.([]any)
			if !isArr {
				if !s.proto && f.Type == "string" {
					s.value(f, join(path, k), val, out) // Meta/TikTok accept one string for a list
					continue
				}
				add(join(path, k), "must be an array, got %s", kind(val))
				continue
			}
			if max, ok := s.Limits[name+"."+fname+".max"]; ok && len(arr) > max {
				add(join(path, k), "at most %d items, got %d", max, len(arr))
			}
			for i, item := range arr {
				s.value(f, fmt.Sprintf("%s[%d]", join(path, k), i), item, out)
			}
			continue
		}
		s.value(f, join(path, k), val, out)
	}
	req := make([]string, 0)
	for k, f := range m.Fields {
		if f.Required != nil && *f.Required && !seen[k] {
			req = append(req, k)
		}
	}
	sort.Strings(req)
	for _, k := range req {
		add(join(path, k), "required field missing")
	}
}

var (
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	int64Str  = regexp.MustCompile(`^-?[0-9]+$`)
)

func (s *Schema) value(f Field, path string, v any, out *[]Violation) {
	add := func(format string, args ...any) {
		*out = append(*out, Violation{Path: path, Problem: fmt.Sprintf(format, args...)})
	}
	if v == nil {
		return
	}
	types := strings.Split(f.Type, "|")
	var problems []string
	for _, t := range types {
		p := s.typeProblem(t, f, path, v, out)
		if p == "" {
			return
		}
		problems = append(problems, p)
	}
	add("%s", strings.Join(problems, "; or "))
}

// typeProblem checks v against one type; nested messages report into out and count as ok.
func (s *Schema) typeProblem(t string, f Field, path string, v any, out *[]Violation) string {
	switch {
	case t == "string":
		str, ok := v.(string)
		if !ok {
			return "must be a string, got " + kind(v)
		}
		switch f.Format {
		case "sha256_hex":
			if !sha256Hex.MatchString(str) {
				return "must be a lowercase hex SHA-256 (64 characters)"
			}
		case "IPV4_OR_IPV6":
		}
		return ""
	case t == "int32" || t == "int64":
		switch n := v.(type) {
		case json.Number:
			i, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil {
				return "must be an integer, got " + n.String()
			}
			if t == "int32" && (i < -1<<31 || i >= 1<<31) {
				return "out of int32 range"
			}
			if f.Format == "unix_seconds" && (i < 0 || i > 1e11) {
				return "must be Unix seconds, got " + n.String()
			}
			if f.Format == "unix_millis" && (i < 1e12 || i >= 1e13) {
				return "must be Unix milliseconds (13 digits), got " + n.String()
			}
			return ""
		case string:
			if s.proto && int64Str.MatchString(n) {
				return ""
			}
			return "must be an integer, got a string"
		}
		return "must be an integer, got " + kind(v)
	case t == "double":
		if _, ok := v.(json.Number); ok {
			return ""
		}
		return "must be a number, got " + kind(v)
	case t == "bool":
		if _, ok := v.(bool); ok {
			return ""
		}
		return "must be true or false, got " + kind(v)
	case t == "timestamp":
		str, ok := v.(string)
		if !ok {
			return "must be an RFC 3339 timestamp string, got " + kind(v)
		}
		if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
			return fmt.Sprintf("must be an RFC 3339 timestamp with a time zone, got %q", str)
		}
		return ""
	case t == "bytes":
		str, ok := v.(string)
		if !ok {
			return "must be a base64 string, got " + kind(v)
		}
		if _, err := base64.StdEncoding.DecodeString(str); err != nil {
			return "must be base64"
		}
		return ""
	case t == "any":
		obj, ok := v.(map[string]any)
		if !ok {
			return "must be an object, got " + kind(v)
		}
		if _, ok := obj["@type"].(string); !ok {
			return "must carry an @type"
		}
		return ""
	case strings.HasPrefix(t, "tuple:"):
		if _, ok := v.([]any); !ok {
			return "must be a positional array, got " + kind(v)
		}
		return ""
	case strings.HasPrefix(t, "enum:"):
		return s.enumProblem(strings.TrimPrefix(t, "enum:"), v)
	case strings.HasPrefix(t, "message:"):
		if _, ok := v.(map[string]any); !ok {
			return "must be an object, got " + kind(v)
		}
		s.message(strings.TrimPrefix(t, "message:"), path, v, out)
		return ""
	}
	return "schema type " + t + " unknown"
}

func (s *Schema) enumProblem(name string, v any) string {
	values, ok := s.Enums[name]
	if !ok {
		return "schema has no enum " + name
	}
	if n, isNum := v.(json.Number); isNum && s.proto {
		for val, num := range s.EnumMeta[name].Numbers {
			if n.String() == strconv.Itoa(num) && !unspecified(val) {
				return ""
			}
		}
		return fmt.Sprintf("enum %s has no usable number %s", name, n)
	}
	str, isStr := v.(string)
	if !isStr {
		return fmt.Sprintf("must be a %s value string, got %s", name, kind(v))
	}
	for _, val := range values {
		if val == str && !(s.proto && unspecified(val)) {
			return ""
		}
	}
	usable := make([]string, 0, len(values))
	for _, val := range values {
		if !(s.proto && unspecified(val)) {
			usable = append(usable, val)
		}
	}
	return fmt.Sprintf("must be one of %s, got %q", strings.Join(usable, "|"), str)
}

// unspecified reports the proto placeholder values that are not valid inputs.
func unspecified(v string) bool {
	return v == "UNSPECIFIED" || v == "UNKNOWN" || strings.HasSuffix(v, "_UNSPECIFIED")
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func pathOr(p string) string {
	if p == "" {
		return "$"
	}
	return p
}
