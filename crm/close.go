package crm

import (
	"encoding/json"
	"strings"
	"time"
)

// Close (close.com) posts one event per webhook, wrapped as {"subscription_id": ...,
// "event": {...}} (the bare event object is accepted too):
//
//	{"event":{"id":"ev_...","object_type":"opportunity","object_id":"oppo_...",
//	 "lead_id":"lead_...","action":"updated","date_updated":"2019-01-15T12:48:23.395000",
//	 "changed_fields":["status_id","status_label","status_type"],
//	 "previous_data":{"status_type":"active",...},"data":{...opportunity...}}}
//
// An opportunity created, or updated so that its status_id or status_type changed,
// becomes a stage change: stage is the status_id (status_label rides along in
// properties), status is status_type (won, lost, or active read as open), the value is in
// cents, the pipeline is pipeline_id. The opportunity's contact_id is its contact; Close
// keeps the other contacts on the lead, so lead_id is kept in properties under
// PropertyCRMLeadID and joins as the subject close:lead:<lead_id>. Every other event is
// ignored.

// PropertyCRMLeadID names the property holding the CRM-side lead an object belongs to
// (Close's lead_id). SubjectKeys joins on it as source:lead:<id>.
const PropertyCRMLeadID = "crm_lead_id"

// closeTimeLayout is Close's event time: ISO 8601 without a zone, in UTC.
const closeTimeLayout = "2006-01-02T15:04:05.999999"

func (d *decoder) close(payload []byte) *DecodeError {
	raw, err := decParse(payload)
	if err != nil {
		return err
	}
	m, err := decObject(raw, "")
	if err != nil {
		return err
	}
	prefix := ""
	if _, wrapped := m["event"]; wrapped {
		if m, err = decObject(m["event"], "event"); err != nil {
			return err
		}
		prefix = "event"
	}
	sc, ok, err := closeEvent(m)
	if err != nil {
		return err.prefixed(prefix)
	}
	if !ok {
		d.out.Ignored++
		return nil
	}
	d.emit(sc)
	return nil
}

func closeEvent(m map[string]json.RawMessage) (StageChange, bool, *DecodeError) {
	sc := StageChange{Source: "close", ObjectType: ObjectOpportunity}
	objectType, err := decRequiredString(m["object_type"], "object_type")
	if err != nil {
		return sc, false, err
	}
	action, err := decRequiredString(m["action"], "action")
	if err != nil {
		return sc, false, err
	}
	if objectType != "opportunity" || (action != "updated" && action != "created") {
		return sc, false, nil
	}
	if decIsNull(m["data"]) {
		return sc, false, decodeErr("data", "required for an opportunity event")
	}
	data, err := decObject(m["data"], "data")
	if err != nil {
		return sc, false, err
	}
	if action == "updated" {
		changed, err := closeStatusChanged(m)
		if err != nil || !changed {
			return sc, false, err
		}
	}
	if sc.ObjectID, err = decID(data["id"], "data.id"); err != nil {
		return sc, false, err
	}
	if sc.ObjectID == "" {
		if sc.ObjectID, err = decRequiredID(m["object_id"], "object_id"); err != nil {
			return sc, false, err
		}
	}
	if sc.Stage, err = decRequiredID(data["status_id"], "data.status_id"); err != nil {
		return sc, false, err
	}
	statusType, err := decString(data["status_type"], "data.status_type")
	if err != nil {
		return sc, false, err
	}
	switch statusType {
	case "won":
		sc.Status = StatusWon
	case "lost":
		sc.Status = StatusLost
	case "active", "":
		sc.Status = StatusOpen
	default:
		return sc, false, decodeErr("data.status_type", "must be one of active, won, lost")
	}
	if sc.Pipeline, err = decID(data["pipeline_id"], "data.pipeline_id"); err != nil {
		return sc, false, err
	}
	if !decIsNull(m["previous_data"]) {
		prev, err := decObject(m["previous_data"], "previous_data")
		if err != nil {
			return sc, false, err
		}
		if sc.PreviousStage, err = decID(prev["status_id"], "previous_data.status_id"); err != nil {
			return sc, false, err
		}
	}
	cents, err := decDecimal(data["value"], "data.value")
	if err != nil {
		return sc, false, err
	}
	if cents != nil {
		v := cents.Shift(-2) // Close keeps values in cents
		sc.Amount = &v
	}
	cy, err := decString(data["value_currency"], "data.value_currency")
	if err != nil {
		return sc, false, err
	}
	if sc.Currency, err = decCurrency(cy, "data.value_currency"); err != nil {
		return sc, false, err
	}
	contact, err := decID(data["contact_id"], "data.contact_id")
	if err != nil {
		return sc, false, err
	}
	if contact != "" {
		sc.ContactIDs = []string{contact}
	}
	lead, err := decID(data["lead_id"], "data.lead_id")
	if err != nil {
		return sc, false, err
	}
	if lead == "" {
		if lead, err = decID(m["lead_id"], "lead_id"); err != nil {
			return sc, false, err
		}
	}
	props := map[string]string{}
	if lead != "" {
		props[PropertyCRMLeadID] = lead
	}
	label, err := decString(data["status_label"], "data.status_label")
	if err != nil {
		return sc, false, err
	}
	if label = strings.TrimSpace(label); label != "" && len(label) <= 200 {
		props["status_label"] = label
	}
	if len(props) > 0 {
		sc.Properties = props
	}
	// The moment of the change: the event's date_updated, else date_created, else the
	// opportunity's own date_updated.
	for _, f := range []struct {
		raw  json.RawMessage
		name string
	}{{m["date_updated"], "date_updated"}, {m["date_created"], "date_created"}, {data["date_updated"], "data.date_updated"}} {
		if decIsNull(f.raw) {
			continue
		}
		if sc.OccurredAt, err = closeTime(f.raw, f.name); err != nil {
			return sc, false, err
		}
		return sc, true, nil
	}
	return sc, false, decodeErr("date_updated", "required (the event's time)")
}

// closeStatusChanged reports whether an update event changed the opportunity's status:
// changed_fields names status_id or status_type, or (without changed_fields)
// previous_data holds one of them.
func closeStatusChanged(m map[string]json.RawMessage) (bool, *DecodeError) {
	if !decIsNull(m["changed_fields"]) {
		list, err := decArray(m["changed_fields"], "changed_fields")
		if err != nil {
			return false, err
		}
		for _, raw := range list {
			f, err := decString(raw, "changed_fields")
			if err != nil {
				return false, err
			}
			if f == "status_id" || f == "status_type" {
				return true, nil
			}
		}
		return false, nil
	}
	if decIsNull(m["previous_data"]) {
		return false, nil
	}
	prev, err := decObject(m["previous_data"], "previous_data")
	if err != nil {
		return false, err
	}
	_, a := prev["status_id"]
	_, b := prev["status_type"]
	return a || b, nil
}

// closeTime reads Close's zone-less ISO 8601 times (UTC) or an RFC 3339 time.
func closeTime(raw json.RawMessage, field string) (time.Time, *DecodeError) {
	s, err := decRequiredString(raw, field)
	if err != nil {
		return time.Time{}, err
	}
	if t, perr := time.Parse(closeTimeLayout, s); perr == nil {
		return decTimeInRange(t, field)
	}
	if t, perr := time.Parse(time.RFC3339Nano, s); perr == nil {
		return decTimeInRange(t, field)
	}
	return time.Time{}, decodeErr(field, "must be a time as YYYY-MM-DDTHH:MM:SS[.ffffff] (UTC) or RFC 3339")
}
