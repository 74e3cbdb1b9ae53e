package ingest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"

	"github.com/closedloop/closedloop/crm"
)

// record is one Kafka message a webhook request becomes: the raw events of one CRM record.
type record struct {
	key     string // crm.SubjectKey(crm source, object type, id): one record, one partition
	eventID string // the CRM's own event id(s), comma-separated; "" when it has none
	value   []byte
}

// errUnsplittable says a verified body has not the shape the splitter knows; the caller
// publishes it whole and the consumer dead-letters it with the decoder's reason. Its text
// never quotes the body.
var errUnsplittable = errors.New("body is not a webhook of the expected shape")

// split cuts a verified body into one record per CRM record, keeping each record's raw
// events in their order. HubSpot and Attio batches become one JSON batch per record;
// a Salesforce outbound message becomes one SOAP message per sObject (the envelope kept
// byte for byte, only the other records' Notification elements left out); Pipedrive,
// Close and canonical bodies are one record each. An empty batch yields no record.
func split(kind string, body []byte) ([]record, error) {
	switch kind {
	case CRMHubSpot:
		return splitHubSpot(body)
	case CRMSalesforce:
		return splitSalesforce(body)
	case CRMPipedrive:
		return splitPipedrive(body)
	case CRMClose:
		return splitClose(body)
	case CRMAttio:
		return splitAttio(body)
	case CRMCanonical:
		return splitCanonical(body)
	}
	return nil, errUnsplittable
}

// jsonID reads an id that a CRM sends as a number or a string.
func jsonID(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if digits(raw) {
		return string(raw) // the usual case: a plain integer, as json.Number spells it
	}
	var s string
	if raw[0] == '"' {
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return strings.TrimSpace(s)
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return ""
	}
	return n.String()
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// group collects events per key in order of first appearance.
type group struct {
	order []string
	by    map[string]*groupEntry
}

type groupEntry struct {
	events   []json.RawMessage
	eventIDs []string
}

func (g *group) add(key, eventID string, ev json.RawMessage) {
	if g.by == nil {
		g.by = map[string]*groupEntry{}
	}
	e, ok := g.by[key]
	if !ok {
		e = &groupEntry{}
		g.by[key] = e
		g.order = append(g.order, key)
	}
	e.events = append(e.events, ev)
	if eventID != "" {
		e.eventIDs = append(e.eventIDs, eventID)
	}
}

func joinArray(evs []json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(ev)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// hubspotEvent is what splitHubSpot reads of a HubSpot event.
type hubspotEvent struct {
	EventID          json.RawMessage `json:"eventId"`
	SubscriptionType string          `json:"subscriptionType"`
	ObjectID         json.RawMessage `json:"objectId"`
	ObjectTypeID     string          `json:"objectTypeId"`
}

// key is the event's record key, "" when it names no record.
func (e *hubspotEvent) key() string {
	id := jsonID(e.ObjectID)
	object, _, _ := strings.Cut(e.SubscriptionType, ".")
	if object == "object" && e.ObjectTypeID != "" {
		object = e.ObjectTypeID
	}
	if id == "" || object == "" {
		return ""
	}
	return crm.SubjectKey(crm.FormatHubSpot, strings.ToLower(object), id)
}

// splitHubSpot: a JSON array of events, each with objectId and a subscriptionType
// "<object>.<change>" (the generic "object.*" types name the object in objectTypeId).
// A batch of one record (a single event, the usual webhook) is published as it came,
// byte for byte, after one JSON pass; only a batch of several records is cut up.
func splitHubSpot(body []byte) ([]record, error) {
	var events []hubspotEvent
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, errUnsplittable
	}
	if len(events) == 0 {
		return nil, nil
	}
	keys := make([]string, len(events))
	ids := make([]string, 0, len(events))
	one := true
	for i := range events {
		if keys[i] = events[i].key(); keys[i] == "" {
			return nil, errUnsplittable
		}
		one = one && keys[i] == keys[0]
		if id := jsonID(events[i].EventID); id != "" {
			ids = append(ids, id)
		}
	}
	if one {
		return []record{{key: keys[0], eventID: strings.Join(ids, ","), value: body}}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil || len(raws) != len(events) {
		return nil, errUnsplittable
	}
	var g group
	for i, ev := range raws {
		g.add(keys[i], jsonID(events[i].EventID), ev)
	}
	out := make([]record, 0, len(g.order))
	for _, k := range g.order {
		e := g.by[k]
		out = append(out, record{key: k, eventID: strings.Join(e.eventIDs, ","), value: joinArray(e.events)})
	}
	return out, nil
}

// splitPipedrive: v2 {"meta":{"entity","entity_id","id"},"data":{...}} or
// v1 {"meta":{"object","id"},"current":{"id"}}. Only v2 has an event id (meta.id).
func splitPipedrive(body []byte) ([]record, error) {
	var m struct {
		Meta struct {
			Entity   string          `json:"entity"`
			EntityID json.RawMessage `json:"entity_id"`
			Object   string          `json:"object"`
			ID       json.RawMessage `json:"id"`
		} `json:"meta"`
		Data    json.RawMessage `json:"data"`
		Current struct {
			ID json.RawMessage `json:"id"`
		} `json:"current"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil, errUnsplittable
	}
	var object, id, eventID string
	if len(m.Data) > 0 {
		object, id, eventID = m.Meta.Entity, jsonID(m.Meta.EntityID), jsonID(m.Meta.ID)
	} else {
		object, id = m.Meta.Object, jsonID(m.Meta.ID)
		if id == "" {
			id = jsonID(m.Current.ID)
		}
	}
	if object == "" || id == "" {
		return nil, errUnsplittable
	}
	return []record{{key: crm.SubjectKey(crm.FormatPipedrive, strings.ToLower(object), id), eventID: eventID, value: body}}, nil
}

// splitClose: {"subscription_id", "event":{"id","object_type","object_id",...}}.
func splitClose(body []byte) ([]record, error) {
	var m struct {
		Event struct {
			ID         string `json:"id"`
			ObjectType string `json:"object_type"`
			ObjectID   string `json:"object_id"`
		} `json:"event"`
	}
	if json.Unmarshal(body, &m) != nil || m.Event.ObjectType == "" || m.Event.ObjectID == "" {
		return nil, errUnsplittable
	}
	return []record{{key: crm.SubjectKey(CRMClose, strings.ToLower(m.Event.ObjectType), m.Event.ObjectID), eventID: m.Event.ID, value: body}}, nil
}

// splitAttio: {"webhook_id", "events":[{"event_type","id":{"object_id","record_id"},...}]};
// events are grouped by record (or list entry) and re-wrapped with the same webhook_id.
func splitAttio(body []byte) ([]record, error) {
	var m struct {
		WebhookID json.RawMessage   `json:"webhook_id"`
		Events    []json.RawMessage `json:"events"`
	}
	if json.Unmarshal(body, &m) != nil || m.Events == nil {
		return nil, errUnsplittable
	}
	var g group
	for _, ev := range m.Events {
		var e struct {
			ID struct {
				ObjectID string `json:"object_id"`
				RecordID string `json:"record_id"`
				ListID   string `json:"list_id"`
				EntryID  string `json:"entry_id"`
			} `json:"id"`
		}
		if json.Unmarshal(ev, &e) != nil {
			return nil, errUnsplittable
		}
		var key string
		switch {
		case e.ID.RecordID != "" && e.ID.ObjectID != "":
			key = crm.SubjectKey(CRMAttio, e.ID.ObjectID, e.ID.RecordID)
		case e.ID.EntryID != "" && e.ID.ListID != "":
			key = crm.SubjectKey(CRMAttio, "list-"+e.ID.ListID, e.ID.EntryID)
		default:
			return nil, errUnsplittable
		}
		g.add(key, "", ev)
	}
	webhookID := m.WebhookID
	if len(webhookID) == 0 {
		webhookID = json.RawMessage("null")
	}
	out := make([]record, 0, len(g.order))
	for _, k := range g.order {
		var b bytes.Buffer
		b.WriteString(`{"webhook_id":`)
		b.Write(webhookID)
		b.WriteString(`,"events":`)
		b.Write(joinArray(g.by[k].events))
		b.WriteByte('}')
		out = append(out, record{key: k, value: b.Bytes()})
	}
	return out, nil
}

// splitCanonical: one canonical stage change (crm/CANONICAL.md).
func splitCanonical(body []byte) ([]record, error) {
	var m struct {
		Source     string          `json:"source"`
		ObjectType string          `json:"object_type"`
		ObjectID   json.RawMessage `json:"object_id"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil, errUnsplittable
	}
	id := jsonID(m.ObjectID)
	if m.Source == "" || m.ObjectType == "" || id == "" {
		return nil, errUnsplittable
	}
	return []record{{key: crm.SubjectKey(m.Source, m.ObjectType, id), value: body}}, nil
}

// outbound is what the ingest needs of a Salesforce outbound message: the org, and where
// each Notification element sits in the raw bytes.
type outbound struct {
	orgID         string
	notifications []notification
}

type notification struct {
	id, objectType, objectID string
	start, end               int64 // byte range of <Notification>...</Notification>
}

// parseOutbound reads a SOAP outbound message (notifications: OrganizationId, then up
// to 100 Notification elements of Id and sObject).
func parseOutbound(body []byte) (outbound, error) {
	var out outbound
	d := xml.NewDecoder(bytes.NewReader(body))
	var path []string // local names from the root
	var cur *notification
	var text strings.Builder
	for {
		start := d.InputOffset()
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return outbound{}, errUnsplittable
		}
		switch t := tok.(type) {
		case xml.StartElement:
			path = append(path, t.Name.Local)
			text.Reset()
			switch {
			case t.Name.Local == "Notification" && parentIs(path, "notifications"):
				out.notifications = append(out.notifications, notification{start: start})
				cur = &out.notifications[len(out.notifications)-1]
			case cur != nil && t.Name.Local == "sObject" && parentIs(path, "Notification"):
				for _, a := range t.Attr {
					if a.Name.Local == "type" {
						_, typ, found := strings.Cut(a.Value, ":")
						if !found {
							typ = a.Value
						}
						cur.objectType = strings.ToLower(typ)
					}
				}
			}
		case xml.CharData:
			if text.Len() < 256 {
				text.Write(t)
			}
		case xml.EndElement:
			if len(path) == 0 {
				return outbound{}, errUnsplittable
			}
			v := strings.TrimSpace(text.String())
			switch {
			case t.Name.Local == "OrganizationId" && parentIs(path, "notifications"):
				out.orgID = v
			case cur != nil && t.Name.Local == "Id" && parentIs(path, "Notification"):
				cur.id = v
			case cur != nil && t.Name.Local == "Id" && parentIs(path, "sObject"):
				cur.objectID = v
			case cur != nil && t.Name.Local == "Notification" && parentIs(path, "notifications"):
				cur.end = d.InputOffset()
				cur = nil
			}
			path = path[:len(path)-1]
			text.Reset()
		}
	}
	if len(path) != 0 || cur != nil {
		return outbound{}, errUnsplittable
	}
	return out, nil
}

// parentIs reports whether the element at the end of path sits directly in parent.
func parentIs(path []string, parent string) bool {
	return len(path) >= 2 && path[len(path)-2] == parent
}

func splitSalesforce(body []byte) ([]record, error) {
	msg, err := parseOutbound(body)
	if err != nil {
		return nil, err
	}
	ns := msg.notifications
	if len(ns) == 0 {
		return nil, nil
	}
	type entry struct {
		parts [][]byte
		ids   []string
	}
	var order []string
	by := map[string]*entry{}
	for _, n := range ns {
		if n.objectID == "" || n.objectType == "" || n.end <= n.start {
			return nil, errUnsplittable
		}
		k := crm.SubjectKey(crm.FormatSalesforce, n.objectType, n.objectID)
		e, ok := by[k]
		if !ok {
			e = &entry{}
			by[k] = e
			order = append(order, k)
		}
		e.parts = append(e.parts, body[n.start:n.end])
		if n.id != "" {
			e.ids = append(e.ids, n.id)
		}
	}
	prefix, suffix := body[:ns[0].start], body[ns[len(ns)-1].end:]
	out := make([]record, 0, len(order))
	for _, k := range order {
		e := by[k]
		var b bytes.Buffer
		b.Write(prefix)
		b.Write(bytes.Join(e.parts, []byte("\n")))
		b.Write(suffix)
		out = append(out, record{key: k, eventID: strings.Join(e.ids, ","), value: b.Bytes()})
	}
	return out, nil
}
