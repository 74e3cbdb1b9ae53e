package crm

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
)

// Salesforce arrives in two shapes, told apart by the first byte:
//
// Change Data Capture (JSON): an OpportunityChangeEvent or LeadChangeEvent, either bare
// ({"ChangeEventHeader":{...},"StageName":"Closed Won",...}), in the streaming envelope
// ({"data":{"payload":{...},"event":{"replayId":1}},"channel":"/data/OpportunityChangeEvent"}),
// with a top-level "payload", or as a JSON array of any of these. An update carries only
// the fields that changed, so a change event becomes stage changes (one per record id)
// only when it carries StageName (Opportunity) or Status (Lead).
//
// Outbound Message (SOAP XML): see salesforce_outbound.go.

// salesforceObject is what one Salesforce record says, whichever shape it came in: the
// API name of each field and its value as text (absent or nil fields are missing).
type salesforceObject struct {
	entity string            // Opportunity | Lead | ...
	fields map[string]string // API field name -> text value
}

func (d *decoder) salesforce(payload []byte) *DecodeError {
	trimmed := bytes.TrimLeft(payload, " \t\r\n\ufeff")
	if bytes.HasPrefix(trimmed, []byte("\xef\xbb\xbf")) {
		trimmed = trimmed[3:]
	}
	if len(trimmed) > 0 && trimmed[0] == '<' {
		return d.salesforceOutbound(trimmed)
	}
	raw, err := decParse(payload)
	if err != nil {
		return err
	}
	switch decJSONKind(raw) {
	case "an object":
		return d.salesforceCDC(raw, -1)
	case "an array":
		events, err := decArray(raw, "")
		if err != nil {
			return err
		}
		for i, ev := range events {
			if err := d.salesforceCDC(ev, i); err != nil {
				d.bad(i, err)
			}
		}
		return nil
	default:
		return decodeErr("", "must be a Change Data Capture event (JSON object or array) or an outbound message (XML), got %s", decJSONKind(raw))
	}
}

// salesforceCDC decodes one change event. index is its place in an array, or -1 when the
// message is the single event; a returned error is about this event only.
func (d *decoder) salesforceCDC(raw json.RawMessage, index int) *DecodeError {
	ev, err := decObject(raw, "")
	if err != nil {
		return err
	}
	prefix := ""
	// Unwrap the streaming (CometD) envelope {"data":{"payload":{...}}} or {"payload":{...}}.
	if data, ok := ev["data"]; ok && decJSONKind(data) == "an object" {
		inner, err := decObject(data, "data")
		if err != nil {
			return err
		}
		if p, ok := inner["payload"]; ok {
			if ev, err = decObject(p, "data.payload"); err != nil {
				return err
			}
			prefix = "data.payload."
		}
	} else if p, ok := ev["payload"]; ok {
		if ev, err = decObject(p, "payload"); err != nil {
			return err
		}
		prefix = "payload."
	}
	hdrRaw, ok := ev["ChangeEventHeader"]
	if !ok || decIsNull(hdrRaw) {
		return decodeErr(prefix+"ChangeEventHeader", "required (not a Change Data Capture event)")
	}
	hdr, err := decObject(hdrRaw, prefix+"ChangeEventHeader")
	if err != nil {
		return err
	}
	h := prefix + "ChangeEventHeader."
	entity, err := decRequiredString(salesforceUnwrap(hdr["entityName"]), h+"entityName")
	if err != nil {
		return err
	}
	changeType, err := decRequiredString(salesforceUnwrap(hdr["changeType"]), h+"changeType")
	if err != nil {
		return err
	}
	stageField, objectType := salesforceStageField(entity)
	if stageField == "" || (changeType != "CREATE" && changeType != "UPDATE") {
		d.out.Ignored++
		return nil
	}
	obj := salesforceObject{entity: entity, fields: map[string]string{}}
	for k, v := range ev {
		if k == "ChangeEventHeader" {
			continue
		}
		text, present, err := salesforceJSONValue(v, prefix+k)
		if err != nil {
			if salesforceUsedField(k) {
				return err
			}
			continue // a compound or unusual field we do not read
		}
		if present {
			obj.fields[k] = text
		}
	}
	// An update lists the fields it changed; a stage that is not among them did not move.
	if changeType == "UPDATE" {
		changed, err := salesforceChangedFields(hdr["changedFields"], h+"changedFields")
		if err != nil {
			return err
		}
		if changed != nil && !changed[stageField] {
			delete(obj.fields, stageField)
		}
	}
	if strings.TrimSpace(obj.fields[stageField]) == "" {
		d.out.Ignored++ // the stage did not change in this event
		return nil
	}
	ids, err := salesforceRecordIDs(hdr["recordIds"], h+"recordIds")
	if err != nil {
		return err
	}
	when, err := decEpochMillis(salesforceUnwrap(hdr["commitTimestamp"]), h+"commitTimestamp")
	if err != nil {
		return err
	}
	base, err := d.salesforceChange(obj, objectType, stageField, prefix, index)
	if err != nil {
		return err
	}
	base.OccurredAt = when
	for _, id := range ids {
		sc := base
		sc.ObjectID = id
		sc.Identifiers = cloneSet(base.Identifiers)
		d.emit(sc)
	}
	return nil
}

// salesforceStageField names the field that holds the stage of entity, and the canonical
// object type; "" for entities that have no stage we read.
func salesforceStageField(entity string) (field, objectType string) {
	switch entity {
	case "Opportunity":
		return "StageName", ObjectOpportunity
	case "Lead":
		return "Status", ObjectLead
	}
	return "", ""
}

// salesforceUsedField reports whether the decoder reads field k, so that a malformed value
// there is an error while a malformed value elsewhere is not our concern.
func salesforceUsedField(k string) bool {
	switch k {
	case "StageName", "Status", "Amount", "CurrencyIsoCode", "IsWon", "IsClosed", "Email", "Phone",
		"ContactId", "ConvertedContactId", "Id", "LastModifiedDate":
		return true
	}
	return false
}

// salesforceChange builds the stage change shared by every record id of one event or
// notification: stage, status, amount, currency, contact and hashed identifiers.
func (d *decoder) salesforceChange(obj salesforceObject, objectType, stageField, prefix string, index int) (StageChange, *DecodeError) {
	f := obj.fields
	sc := StageChange{Source: "salesforce", ObjectType: objectType, Stage: f[stageField]}
	if len(sc.Stage) > decMaxText {
		return sc, decodeErr(prefix+stageField, "is over the %d-byte limit", decMaxText)
	}
	if objectType == ObjectOpportunity {
		won, wonKnown, err := salesforceBool(f, "IsWon", prefix)
		if err != nil {
			return sc, err
		}
		closed, closedKnown, err := salesforceBool(f, "IsClosed", prefix)
		if err != nil {
			return sc, err
		}
		switch {
		case wonKnown && won:
			sc.Status = StatusWon
		case closedKnown && !closed:
			sc.Status = StatusOpen
		case closedKnown && closed && wonKnown:
			sc.Status = StatusLost
		}
		if v, ok := f["Amount"]; ok {
			amt, err := decDecimalText(v, prefix+"Amount")
			if err != nil {
				return sc, err
			}
			sc.Amount = amt
		}
	}
	contactField := "ConvertedContactId"
	if objectType == ObjectOpportunity {
		contactField = "ContactId"
	}
	if c := f[contactField]; c != "" {
		if err := decCheckID(c, prefix+contactField); err != nil {
			return sc, err
		}
		sc.ContactIDs = []string{c}
	}
	cy, err := decCurrency(f["CurrencyIsoCode"], prefix+"CurrencyIsoCode")
	if err != nil {
		return sc, err
	}
	sc.Currency = cy
	if objectType == ObjectLead {
		d.addIdentifier(&sc, index, prefix+"Email", pii.Email, f["Email"])
		d.addIdentifier(&sc, index, prefix+"Phone", pii.Phone, f["Phone"])
	}
	return sc, nil
}

func salesforceBool(f map[string]string, name, prefix string) (value, known bool, err *DecodeError) {
	v, ok := f[name]
	if !ok {
		return false, false, nil
	}
	switch strings.ToLower(v) {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, false, decodeErr(prefix+name, "must be true or false")
}

// salesforceJSONValue renders one CDC field value as text. Strings stay as they are,
// numbers keep their text, booleans read true/false; null is absent. The Pub/Sub API's
// Avro-JSON union form {"string":"Closed Won"} is unwrapped. Objects (compound fields)
// are absent.
func salesforceJSONValue(raw json.RawMessage, field string) (text string, present bool, err *DecodeError) {
	raw = salesforceUnwrap(raw)
	switch k := decJSONKind(raw); k {
	case "null", "nothing", "an object", "an array":
		return "", false, nil
	case "a string":
		s, err := decStringMax(raw, field, 64<<10)
		return s, err == nil, err
	case "a number":
		return string(bytes.TrimSpace(raw)), true, nil
	case "a boolean":
		if bytes.Equal(bytes.TrimSpace(raw), []byte("true")) {
			return "true", true, nil
		}
		return "false", true, nil
	default:
		return "", false, decodeErr(field, "unexpected %s", k)
	}
}

// salesforceUnwrap turns an Avro-JSON union {"string": x} (one key) into x.
func salesforceUnwrap(raw json.RawMessage) json.RawMessage {
	if decJSONKind(raw) != "an object" {
		return raw
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || len(m) != 1 {
		return raw
	}
	for k, v := range m {
		switch k {
		case "string", "double", "long", "int", "boolean", "float":
			return v
		}
	}
	return raw
}

// salesforceChangedFields reads the header's changedFields. It returns nil when the list
// is absent, empty or in the Pub/Sub API's bitmap form ("0x..."), which cannot be read
// without the schema: the caller then trusts the presence of the field.
func salesforceChangedFields(raw json.RawMessage, field string) (map[string]bool, *DecodeError) {
	if decIsNull(raw) {
		return nil, nil
	}
	items, err := decArray(raw, field)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for i, it := range items {
		s, err := decString(it, field+"["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(s, "0x") {
			return nil, nil
		}
		// Compound fields are listed as "Name.FirstName": the top-level name is what counts.
		top, _, _ := strings.Cut(s, ".")
		out[top] = true
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// salesforceRecordIDs reads the header's recordIds: at least one, no wildcards.
func salesforceRecordIDs(raw json.RawMessage, field string) ([]string, *DecodeError) {
	if decIsNull(raw) {
		return nil, decodeErr(field, "required")
	}
	items, err := decArray(raw, field)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, decodeErr(field, "must name at least one record")
	}
	ids := make([]string, 0, len(items))
	for i, it := range items {
		f := field + "[" + strconv.Itoa(i) + "]"
		id, err := decRequiredID(it, f)
		if err != nil {
			return nil, err
		}
		if strings.Contains(id, "*") {
			return nil, decodeErr(f, "is a wildcard (a field type conversion), not a record id")
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func cloneSet(s pii.Set) pii.Set {
	if len(s) == 0 {
		return nil
	}
	out := make(pii.Set, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}
