package crm

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
)

// ClickIDKeys are the click identifiers a stage change may carry under click_ids.
var ClickIDKeys = []string{"gclid", "gbraid", "wbraid", "fbc", "fbp", "fbclid", "ttclid", "msclkid", "li_fat_id"}

// canonicalFields are the top-level fields of the canonical format (see CANONICAL.md).
// Any other field is an error so that a typo ("ocurred_at") cannot pass unnoticed.
var canonicalFields = map[string]bool{
	"source": true, "object_type": true, "object_id": true, "pipeline": true, "stage": true,
	"previous_stage": true, "status": true, "occurred_at": true, "amount": true, "currency": true,
	"contact_ids": true, "email": true, "phone": true, "click_ids": true, "lead_id": true,
	"properties": true, "identifiers": true,
}

// canonicalIdentifierKeys are the pii.Set keys a canonical message may carry already hashed
// under identifiers{}: what Decode writes for email and phone, so that its output reads back.
var canonicalIdentifierKeys = map[string]bool{
	"email": true, "email/google": true, "phone/e164": true, "phone/digits": true,
}

// canonicalMaxProperties bounds properties{} and contact_ids[].
const canonicalMaxProperties = 256

// canonical decodes one canonical JSON stage change. Every problem is an error about the
// whole message: a canonical message carries exactly one stage change.
func (d *decoder) canonical(payload []byte) *DecodeError {
	m, err := canonicalObject(payload)
	if err != nil {
		return err
	}
	if err := canonicalUnknown(m); err != nil {
		return err
	}
	var sc StageChange
	if sc.Source, err = decRequiredString(m["source"], "source"); err != nil {
		return err
	}
	if strings.Contains(sc.Source, ":") {
		return decodeErr("source", "must not contain ':' (it separates the parts of a subject key)")
	}
	if sc.ObjectType, err = decRequiredString(m["object_type"], "object_type"); err != nil {
		return err
	}
	switch sc.ObjectType {
	case ObjectDeal, ObjectOpportunity, ObjectLead, ObjectContact:
	default:
		return decodeErr("object_type", "must be one of deal, opportunity, lead, contact")
	}
	if sc.ObjectID, err = decRequiredID(m["object_id"], "object_id"); err != nil {
		return err
	}
	if sc.Pipeline, err = decString(m["pipeline"], "pipeline"); err != nil {
		return err
	}
	if sc.Stage, err = decRequiredString(m["stage"], "stage"); err != nil {
		return err
	}
	if sc.PreviousStage, err = decString(m["previous_stage"], "previous_stage"); err != nil {
		return err
	}
	if sc.Status, err = decString(m["status"], "status"); err != nil {
		return err
	}
	switch sc.Status {
	case "", StatusOpen, StatusWon, StatusLost:
	default:
		return decodeErr("status", "must be one of open, won, lost")
	}
	occurred, err := decRequiredString(m["occurred_at"], "occurred_at")
	if err != nil {
		return err
	}
	if sc.OccurredAt, err = decRFC3339(occurred, "occurred_at"); err != nil {
		return err
	}
	if sc.Amount, err = decDecimal(m["amount"], "amount"); err != nil {
		return err
	}
	cur, err := decString(m["currency"], "currency")
	if err != nil {
		return err
	}
	if sc.Currency, err = decCurrency(cur, "currency"); err != nil {
		return err
	}
	if sc.ContactIDs, err = canonicalContactIDs(m["contact_ids"]); err != nil {
		return err
	}
	if sc.ClickIDs, err = canonicalClickIDs(m["click_ids"]); err != nil {
		return err
	}
	if sc.LeadID, err = decID(m["lead_id"], "lead_id"); err != nil {
		return err
	}
	if sc.Properties, err = canonicalProperties(m["properties"]); err != nil {
		return err
	}
	if sc.Identifiers, err = canonicalIdentifiers(m["identifiers"]); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		field pii.Field
	}{{"email", pii.Email}, {"phone", pii.Phone}} {
		v, err := decStringMax(m[f.name], f.name, 320)
		if err != nil {
			return err
		}
		d.addIdentifier(&sc, -1, f.name, f.field, v)
	}
	d.emit(sc)
	return nil
}

// canonicalObject parses the payload as a JSON object of raw fields. A valid object with
// plain keys (the usual case) is split without reflection; anything else goes through
// decParse and decObject, for their errors.
func canonicalObject(payload []byte) (map[string]json.RawMessage, *DecodeError) {
	if json.Valid(payload) {
		if m, ok := splitObject(payload); ok {
			return m, nil
		}
	}
	raw, err := decParse(payload)
	if err != nil {
		return nil, err
	}
	return decObject(raw, "")
}

// canonicalUnknown names the first unknown top-level field, in sorted order so the error
// is the same for the same payload.
func canonicalUnknown(m map[string]json.RawMessage) *DecodeError {
	var unknown []string
	for k := range m {
		if !canonicalFields[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return decodeErr(canonicalFieldName(unknown[0]), "unknown field (see crm/CANONICAL.md for the fields)")
}

// canonicalFieldName makes an unknown key safe to print as a field name.
func canonicalFieldName(k string) string {
	if len(k) > 40 {
		k = k[:40] + "..."
	}
	return strings.Map(func(r rune) rune {
		if decIsControl(r) {
			return '?'
		}
		return r
	}, k)
}

// canonicalIdentifiers reads identifiers{}: SHA-256 hex values (as Decode prints them)
// under the email and phone keys. A raw email or phone given beside them replaces them.
func canonicalIdentifiers(raw json.RawMessage) (pii.Set, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	m, err := decObject(raw, "identifiers")
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out pii.Set
	for _, k := range keys {
		field := "identifiers." + canonicalFieldName(k)
		if !canonicalIdentifierKeys[k] {
			return nil, decodeErr(field, "unknown identifier; want one of email, email/google, phone/e164, phone/digits")
		}
		v, err := decString(m[k], field)
		if err != nil {
			return nil, err
		}
		if v == "" {
			continue
		}
		// Never echo the value: it may be a raw email sent to the wrong field.
		v = strings.ToLower(v)
		if !pii.IsSHA256Hex(v) {
			return nil, decodeErr(field, "must be a SHA-256 hex (64 hex characters); send raw values as email or phone")
		}
		if out == nil {
			out = pii.Set{}
		}
		out[k] = v
	}
	return out, nil
}

func canonicalContactIDs(raw json.RawMessage) ([]string, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	items, err := decArray(raw, "contact_ids")
	if err != nil {
		return nil, err
	}
	if len(items) > canonicalMaxProperties {
		return nil, decodeErr("contact_ids", "has %d entries, over the limit of %d", len(items), canonicalMaxProperties)
	}
	var ids []string
	seen := map[string]bool{}
	for i, item := range items {
		id, err := decRequiredID(item, "contact_ids["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func canonicalClickIDs(raw json.RawMessage) (map[string]string, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	m, err := decObject(raw, "click_ids")
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out map[string]string
	for _, k := range keys {
		field := "click_ids." + canonicalFieldName(k)
		if !isClickIDKey(k) {
			return nil, decodeErr(field, "unknown click id; want one of %s", strings.Join(ClickIDKeys, ", "))
		}
		v, err := decString(m[k], field)
		if err != nil {
			return nil, err
		}
		if v = strings.TrimSpace(v); v == "" {
			continue // an empty form field, not a click id
		}
		if strings.ContainsFunc(v, decIsControl) {
			return nil, decodeErr(field, "contains a control character")
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

func isClickIDKey(k string) bool {
	for _, c := range ClickIDKeys {
		if c == k {
			return true
		}
	}
	return false
}

// canonicalProperties reads properties{}: string values as they are, numbers as their
// decimal text, null values skipped; anything else is an error naming the property.
func canonicalProperties(raw json.RawMessage) (map[string]string, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	m, err := decObject(raw, "properties")
	if err != nil {
		return nil, err
	}
	if len(m) > canonicalMaxProperties {
		return nil, decodeErr("properties", "has %d entries, over the limit of %d", len(m), canonicalMaxProperties)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same payload always reports the same first error
	var out map[string]string
	for _, k := range keys {
		v := m[k]
		field := "properties." + canonicalFieldName(k)
		if k == "" {
			return nil, decodeErr("properties", "has an empty key")
		}
		var text string
		switch kind := decJSONKind(v); kind {
		case "null":
			continue
		case "a string":
			s, err := decStringMax(v, field, 4096)
			if err != nil {
				return nil, err
			}
			text = s
		case "a number":
			d, err := decNumberText(v, field)
			if err != nil {
				return nil, err
			}
			text = d
		default:
			return nil, decodeErr(field, "must be a string or a number, got %s", kind)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = text
	}
	return out, nil
}

// decNumberText returns a JSON number's decimal text: as written when it has no exponent
// (so 12.50 stays 12.50), else in plain decimal form (1e3 becomes 1000).
func decNumberText(raw json.RawMessage, field string) (string, *DecodeError) {
	text := string(bytes.TrimSpace(raw))
	if !strings.ContainsAny(text, "eE") {
		return text, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", decodeErr(field, "is not a number")
	}
	d, err := decDecimalSigned(string(n), field)
	if err != nil {
		return "", err
	}
	return d, nil
}
