package crm

import (
	"encoding/json"
	"strings"
	"time"
)

// Pipedrive sends one JSON object per webhook, in one of two versions.
//
// v1: {"v":1,"event":"updated.deal","meta":{"action":"updated","object":"deal","id":42,
// "timestamp":1700000000,...},"current":{...deal...},"previous":{...deal...}} where
// current and previous are whole deals and times read "YYYY-MM-DD HH:MM:SS" in UTC.
//
// v2: {"meta":{"action":"change","entity":"deal","entity_id":"42","timestamp":...,
// "version":"2.0",...},"data":{...deal...},"previous":{...changed fields only...}} where
// times are RFC 3339 and meta.timestamp is epoch seconds or an RFC 3339 string.
//
// A deal created ("added"/"create") or updated ("updated"/"change") so that its stage_id
// or status differs from before becomes a stage change; stage is the stage_id, pipeline the
// pipeline_id, the person is the contact. Every other event is ignored.

// pipedriveTimeLayout is v1's time format, always UTC.
const pipedriveTimeLayout = "2006-01-02 15:04:05"

func (d *decoder) pipedrive(payload []byte) *DecodeError {
	raw, err := decParse(payload)
	if err != nil {
		return err
	}
	m, err := decObject(raw, "")
	if err != nil {
		return err
	}
	meta := map[string]json.RawMessage{}
	if !decIsNull(m["meta"]) {
		if meta, err = decObject(m["meta"], "meta"); err != nil {
			return err
		}
	}
	var (
		sc      StageChange
		changed bool
	)
	if _, v2 := m["data"]; v2 {
		sc, changed, err = pipedriveV2(m, meta)
	} else {
		sc, changed, err = pipedriveV1(m, meta)
	}
	if err != nil {
		return err
	}
	if !changed {
		d.out.Ignored++
		return nil
	}
	d.emit(sc)
	return nil
}

func pipedriveV1(m, meta map[string]json.RawMessage) (StageChange, bool, *DecodeError) {
	var sc StageChange
	event, err := decString(m["event"], "event")
	if err != nil {
		return sc, false, err
	}
	action, object := "", ""
	if event != "" {
		action, object, _ = strings.Cut(event, ".")
	} else {
		if action, err = decString(meta["action"], "meta.action"); err != nil {
			return sc, false, err
		}
		if object, err = decString(meta["object"], "meta.object"); err != nil {
			return sc, false, err
		}
	}
	if action == "" && object == "" {
		return sc, false, decodeErr("event", "required (a Pipedrive v1 webhook names its event, such as updated.deal)")
	}
	if object != "deal" || (action != "updated" && action != "added") {
		return sc, false, nil
	}
	if decIsNull(m["current"]) {
		return sc, false, decodeErr("current", "required for a deal event")
	}
	cur, err := decObject(m["current"], "current")
	if err != nil {
		return sc, false, err
	}
	var prev map[string]json.RawMessage
	if !decIsNull(m["previous"]) {
		if prev, err = decObject(m["previous"], "previous"); err != nil {
			return sc, false, err
		}
	}
	sc, changed, err := pipedriveDeal(cur, "current", prev, "previous", action == "added")
	if err != nil || !changed {
		return sc, changed, err
	}
	// The moment of the change: won_time for a win, else update_time, else the event time.
	var when json.RawMessage
	whenField := ""
	if sc.Status == StatusWon && !decIsNull(cur["won_time"]) {
		when, whenField = cur["won_time"], "current.won_time"
	} else if !decIsNull(cur["update_time"]) {
		when, whenField = cur["update_time"], "current.update_time"
	}
	if whenField != "" {
		if sc.OccurredAt, err = pipedriveTime(when, whenField); err != nil {
			return sc, false, err
		}
	} else if sc.OccurredAt, err = pipedriveEpoch(meta["timestamp"], "meta.timestamp"); err != nil {
		return sc, false, err
	}
	return sc, true, nil
}

func pipedriveV2(m, meta map[string]json.RawMessage) (StageChange, bool, *DecodeError) {
	var sc StageChange
	action, err := decRequiredString(meta["action"], "meta.action")
	if err != nil {
		return sc, false, err
	}
	entity, err := decRequiredString(meta["entity"], "meta.entity")
	if err != nil {
		return sc, false, err
	}
	if entity != "deal" || (action != "change" && action != "create") {
		return sc, false, nil
	}
	if decIsNull(m["data"]) {
		return sc, false, decodeErr("data", "required for a deal event")
	}
	data, err := decObject(m["data"], "data")
	if err != nil {
		return sc, false, err
	}
	var prev map[string]json.RawMessage
	if !decIsNull(m["previous"]) {
		if prev, err = decObject(m["previous"], "previous"); err != nil {
			return sc, false, err
		}
	}
	// v2's previous holds only the fields that changed: fill in the rest from data so
	// that "absent from previous" reads as "unchanged".
	if prev != nil {
		for _, k := range []string{"stage_id", "status"} {
			if _, ok := prev[k]; !ok {
				prev[k] = data[k]
			}
		}
	}
	sc, changed, err := pipedriveDeal(data, "data", prev, "previous", action == "create")
	if err != nil || !changed {
		return sc, changed, err
	}
	if !decIsNull(meta["timestamp"]) {
		sc.OccurredAt, err = pipedriveEpoch(meta["timestamp"], "meta.timestamp")
	} else {
		sc.OccurredAt, err = pipedriveTime(data["update_time"], "data.update_time")
	}
	if err != nil {
		return sc, false, err
	}
	return sc, true, nil
}

// pipedriveDeal reads the deal fields shared by v1 and v2. changed is false when an
// update moved neither stage nor status (or when the deal was deleted).
func pipedriveDeal(cur map[string]json.RawMessage, curName string, prev map[string]json.RawMessage, prevName string, created bool) (StageChange, bool, *DecodeError) {
	sc := StageChange{Source: "pipedrive", ObjectType: ObjectDeal}
	var err *DecodeError
	if sc.ObjectID, err = decRequiredID(cur["id"], curName+".id"); err != nil {
		return sc, false, err
	}
	if sc.Stage, err = decRequiredID(cur["stage_id"], curName+".stage_id"); err != nil {
		return sc, false, err
	}
	if sc.Pipeline, err = decID(cur["pipeline_id"], curName+".pipeline_id"); err != nil {
		return sc, false, err
	}
	status, err := decString(cur["status"], curName+".status")
	if err != nil {
		return sc, false, err
	}
	switch status {
	case StatusOpen, StatusWon, StatusLost, "":
		sc.Status = status
	case "deleted":
		return sc, false, nil
	default:
		return sc, false, decodeErr(curName+".status", "must be one of open, won, lost, deleted")
	}
	if !created {
		if prev == nil {
			return sc, false, nil // an update that says nothing about what changed
		}
		prevStage, err := decID(prev["stage_id"], prevName+".stage_id")
		if err != nil {
			return sc, false, err
		}
		prevStatus, err := decString(prev["status"], prevName+".status")
		if err != nil {
			return sc, false, err
		}
		if prevStage == sc.Stage && prevStatus == sc.Status {
			return sc, false, nil
		}
		sc.PreviousStage = prevStage
	}
	if sc.Amount, err = decDecimal(cur["value"], curName+".value"); err != nil {
		return sc, false, err
	}
	cy, err := decString(cur["currency"], curName+".currency")
	if err != nil {
		return sc, false, err
	}
	if sc.Currency, err = decCurrency(cy, curName+".currency"); err != nil {
		return sc, false, err
	}
	person, err := pipedriveRef(cur["person_id"], curName+".person_id")
	if err != nil {
		return sc, false, err
	}
	if person != "" {
		sc.ContactIDs = []string{person}
	}
	return sc, true, nil
}

// pipedriveRef reads a related object's id: a number, a string, or (in API-shaped v1
// payloads) an object {"value": 7, "name": ...}.
func pipedriveRef(raw json.RawMessage, field string) (string, *DecodeError) {
	if decJSONKind(raw) == "an object" {
		m, err := decObject(raw, field)
		if err != nil {
			return "", err
		}
		return decID(m["value"], field+".value")
	}
	return decID(raw, field)
}

// pipedriveTime reads "YYYY-MM-DD HH:MM:SS" (UTC, v1) or an RFC 3339 time (v2).
func pipedriveTime(raw json.RawMessage, field string) (time.Time, *DecodeError) {
	s, err := decRequiredString(raw, field)
	if err != nil {
		return time.Time{}, err
	}
	if t, perr := time.Parse(pipedriveTimeLayout, s); perr == nil {
		return decTimeInRange(t, field)
	}
	if t, perr := time.Parse(time.RFC3339Nano, s); perr == nil {
		return decTimeInRange(t, field)
	}
	return time.Time{}, decodeErr(field, "must be a time as YYYY-MM-DD HH:MM:SS (UTC) or RFC 3339")
}

// pipedriveEpoch reads meta.timestamp: epoch seconds (10 digits), epoch milliseconds (13),
// or an RFC 3339 string.
func pipedriveEpoch(raw json.RawMessage, field string) (time.Time, *DecodeError) {
	if decJSONKind(raw) == "a string" {
		s, err := decString(raw, field)
		if err != nil {
			return time.Time{}, err
		}
		if t, perr := time.Parse(time.RFC3339Nano, s); perr == nil {
			return decTimeInRange(t, field)
		}
	}
	n, err := decEpochNumber(raw, field, "epoch seconds or an RFC 3339 time")
	if err != nil {
		return time.Time{}, err
	}
	if n > 1e11 { // milliseconds: seconds would be past the year 5000
		return decTimeInRange(time.UnixMilli(n), field)
	}
	return decTimeInRange(time.Unix(n, 0), field)
}
