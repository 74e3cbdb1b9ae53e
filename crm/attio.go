package crm

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Attio posts {"webhook_id": ..., "events": [...]} (docs.attio.com/rest-api/webhook-reference;
// "currently, each delivery contains exactly one event"). A record.updated event names the
// record and the attribute that changed, a list-entry.updated event the list entry (and its
// parent record) and the attribute:
//
//	{"event_type":"record.updated","id":{"workspace_id":"...","object_id":"...",
//	 "record_id":"...","attribute_id":"..."},"actor":{"type":"workspace-member","id":"..."}}
//	{"event_type":"list-entry.updated","id":{"workspace_id":"...","list_id":"...",
//	 "entry_id":"...","attribute_id":"..."},"parent_object_id":"...","parent_record_id":"...",
//	 "actor":{...}}
//
// Neither carries the new value nor a time, so neither can become a StageChange here: each
// becomes a ThinChange, which the enricher fetches (the record or entry, its status
// attribute's current title and active_from, the deal value, the associated people) before
// the mapping can plan it. Whether the attribute is a stage at all is known only after the
// fetch. Every other event type is ignored.

// Attio's properties on a thin change.
const (
	PropertyAttioEvent        = "attio_event"
	PropertyAttioWorkspace    = "attio_workspace_id"
	PropertyAttioObject       = "attio_object_id"
	PropertyAttioList         = "attio_list_id"
	PropertyAttioAttribute    = "attio_attribute_id"
	PropertyAttioParentObject = "attio_parent_object_id"
	PropertyAttioParentRecord = "attio_parent_record_id"
)

// ThinChange is an event that says which object changed but neither its new stage nor
// when: the enricher fetches it (FetchRef, in the CRM's own form) and plans the mapping on
// what it finds. It never carries contact data.
type ThinChange struct {
	Source     string            `json:"source"`
	ObjectType string            `json:"object_type"`
	ObjectID   string            `json:"object_id"`
	FetchRef   string            `json:"fetch_ref"`
	Properties map[string]string `json:"properties,omitempty"`
}

// AttioRef is a parsed ThinChange.FetchRef of source attio:
//
//	record/<object_id>/<record_id>/<attribute_id>
//	entry/<list_id>/<entry_id>/<attribute_id>/<parent_object_id>/<parent_record_id>
type AttioRef struct {
	Kind                   string // record | entry
	Object, Record         string // record: the object and record; entry: the parent's
	List, Entry, Attribute string
}

// String renders the ref.
func (r AttioRef) String() string {
	if r.Kind == "entry" {
		return strings.Join([]string{"entry", r.List, r.Entry, r.Attribute, r.Object, r.Record}, "/")
	}
	return strings.Join([]string{"record", r.Object, r.Record, r.Attribute}, "/")
}

// ParseAttioRef reads a FetchRef; ok is false when it is not one.
func ParseAttioRef(s string) (AttioRef, bool) {
	p := strings.Split(s, "/")
	for _, part := range p[1:] {
		if !IsAttioID(part) {
			return AttioRef{}, false
		}
	}
	switch {
	case len(p) == 4 && p[0] == "record":
		return AttioRef{Kind: "record", Object: p[1], Record: p[2], Attribute: p[3]}, true
	case len(p) == 6 && p[0] == "entry":
		return AttioRef{Kind: "entry", List: p[1], Entry: p[2], Attribute: p[3], Object: p[4], Record: p[5]}, true
	}
	return AttioRef{}, false
}

// IsAttioID accepts Attio's ids (UUIDs) and slugs: letters, digits, '-' and '_', at most 64.
func IsAttioID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (d *decoder) attio(payload []byte) *DecodeError {
	raw, err := decParse(payload)
	if err != nil {
		return err
	}
	m, err := decObject(raw, "")
	if err != nil {
		return err
	}
	if _, ok := m["events"]; !ok {
		return decodeErr("events", "required")
	}
	events, err := decArray(m["events"], "events")
	if err != nil {
		return err
	}
	for i, ev := range events {
		tc, ok, err := attioEvent(ev)
		if err != nil {
			d.bad(i, err.prefixed("events["+strconv.Itoa(i)+"]"))
			continue
		}
		if !ok {
			d.out.Ignored++
			continue
		}
		d.out.Thin = append(d.out.Thin, tc)
	}
	return nil
}

// attioField is one id the event must carry: where, its path for errors, where it goes.
type attioField struct {
	obj         map[string]json.RawMessage
	name, field string
	into        *string
	prop        string
}

func attioEvent(raw json.RawMessage) (ThinChange, bool, *DecodeError) {
	tc := ThinChange{Source: "attio", ObjectType: ObjectDeal}
	m, err := decObject(raw, "")
	if err != nil {
		return tc, false, err
	}
	typ, err := decRequiredString(m["event_type"], "event_type")
	if err != nil {
		return tc, false, err
	}
	if typ != "record.updated" && typ != "list-entry.updated" {
		return tc, false, nil
	}
	id, err := decObject(m["id"], "id")
	if err != nil {
		return tc, false, err
	}
	read := func(obj map[string]json.RawMessage, name, field string) (string, *DecodeError) {
		s, err := decRequiredString(obj[name], field)
		if err != nil {
			return "", err
		}
		if !IsAttioID(s) {
			return "", decodeErr(field, "is not an Attio id")
		}
		return s, nil
	}
	var ref AttioRef
	tc.Properties = map[string]string{PropertyAttioEvent: typ}
	fields := []attioField{
		{id, "workspace_id", "id.workspace_id", new(string), PropertyAttioWorkspace},
		{id, "attribute_id", "id.attribute_id", &ref.Attribute, PropertyAttioAttribute},
	}
	if typ == "record.updated" {
		ref.Kind = "record"
		fields = append(fields,
			attioField{id, "object_id", "id.object_id", &ref.Object, PropertyAttioObject},
			attioField{id, "record_id", "id.record_id", &ref.Record, ""})
	} else {
		ref.Kind = "entry"
		fields = append(fields,
			attioField{id, "list_id", "id.list_id", &ref.List, PropertyAttioList},
			attioField{id, "entry_id", "id.entry_id", &ref.Entry, ""},
			attioField{m, "parent_object_id", "parent_object_id", &ref.Object, PropertyAttioParentObject},
			attioField{m, "parent_record_id", "parent_record_id", &ref.Record, PropertyAttioParentRecord})
	}
	for _, f := range fields {
		s, err := read(f.obj, f.name, f.field)
		if err != nil {
			return tc, false, err
		}
		*f.into = s
		if f.prop != "" {
			tc.Properties[f.prop] = s
		}
	}
	tc.ObjectID = ref.Record
	if ref.Kind == "entry" {
		tc.ObjectID = ref.Entry
	}
	tc.FetchRef = ref.String()
	return tc, true, nil
}
