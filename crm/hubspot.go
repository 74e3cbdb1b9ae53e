package crm

import (
	"encoding/json"
	"strings"
)

// HubSpot webhooks arrive as a JSON array of up to 100 events of mixed types, each like
//
//	{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1462216307945,
//	 "subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":123,
//	 "changeSource":"CRM","propertyName":"dealstage","propertyValue":"closedwon"}
//
// Two kinds are stage changes: a deal's dealstage and a contact's lifecyclestage, in the
// legacy form ("deal.propertyChange", "contact.propertyChange") or the generic one
// ("object.propertyChange" with objectTypeId "0-3" for deals, "0-1" for contacts). Every
// other event is counted as ignored. HubSpot's property change carries neither the
// previous value nor the amount.

// HubSpot object type ids of the generic "object.*" subscriptions.
const (
	hubspotTypeContact = "0-1"
	hubspotTypeDeal    = "0-3"
)

// hubspot decodes a HubSpot webhook batch. A bad event lands in Decoded.Bad; the rest of
// the batch still decodes. A single event object (not in an array) is read as a batch of one.
func (d *decoder) hubspot(payload []byte) *DecodeError {
	raw, err := decParse(payload)
	if err != nil {
		return err
	}
	var events []json.RawMessage
	switch decJSONKind(raw) {
	case "an array":
		if events, err = decArray(raw, ""); err != nil {
			return err
		}
	case "an object":
		events = []json.RawMessage{raw}
	default:
		return decodeErr("", "must be a JSON array of webhook events, got %s", decJSONKind(raw))
	}
	for i, ev := range events {
		sc, ok, err := hubspotEvent(ev)
		switch {
		case err != nil:
			d.bad(i, err)
		case !ok:
			d.out.Ignored++
		default:
			d.emit(sc)
		}
	}
	return nil
}

// hubspotEvent decodes one event; ok is false when it is not a stage change.
func hubspotEvent(raw json.RawMessage) (sc StageChange, ok bool, err *DecodeError) {
	m, err := decObject(raw, "")
	if err != nil {
		return sc, false, err
	}
	subType, err := decRequiredString(m["subscriptionType"], "subscriptionType")
	if err != nil {
		return sc, false, err
	}
	if !strings.HasSuffix(subType, ".propertyChange") {
		return sc, false, nil
	}
	prop, err := decString(m["propertyName"], "propertyName")
	if err != nil {
		return sc, false, err
	}
	switch subType {
	case "deal.propertyChange":
		sc.ObjectType = ObjectDeal
	case "contact.propertyChange":
		sc.ObjectType = ObjectContact
	case "object.propertyChange":
		typeID, err := decID(m["objectTypeId"], "objectTypeId")
		if err != nil {
			return sc, false, err
		}
		switch typeID {
		case hubspotTypeDeal:
			sc.ObjectType = ObjectDeal
		case hubspotTypeContact:
			sc.ObjectType = ObjectContact
		default:
			return sc, false, nil
		}
	default:
		return sc, false, nil
	}
	if (sc.ObjectType == ObjectDeal && prop != "dealstage") ||
		(sc.ObjectType == ObjectContact && prop != "lifecyclestage") {
		return sc, false, nil
	}
	sc.Source = "hubspot"
	if sc.ObjectID, err = decRequiredID(m["objectId"], "objectId"); err != nil {
		return sc, false, err
	}
	if sc.Stage, err = decString(m["propertyValue"], "propertyValue"); err != nil {
		return sc, false, err
	}
	if strings.TrimSpace(sc.Stage) == "" {
		return sc, false, nil // the property was cleared: no stage to move to
	}
	if sc.OccurredAt, err = decEpochMillis(m["occurredAt"], "occurredAt"); err != nil {
		return sc, false, err
	}
	if sc.ObjectType == ObjectDeal {
		sc.Status = hubspotDealStatus(sc.Stage)
	}
	portal, err := decID(m["portalId"], "portalId")
	if err != nil {
		return sc, false, err
	}
	if portal != "" {
		sc.Properties = map[string]string{"portal_id": portal}
	}
	return sc, true, nil
}

// hubspotDealStatus maps HubSpot's built-in closing stages to a status. Stages of custom
// pipelines have numeric ids and read as open; a mapping rule can still match them by stage.
func hubspotDealStatus(stage string) string {
	switch strings.ToLower(stage) {
	case "closedwon":
		return StatusWon
	case "closedlost":
		return StatusLost
	default:
		return StatusOpen
	}
}
