package crm

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
)

// A Salesforce Outbound Message is a SOAP envelope sent by a workflow rule or flow:
//
//	<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ...>
//	 <soapenv:Body>
//	  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
//	   <OrganizationId>00D...</OrganizationId> <ActionId>04k...</ActionId> ...
//	   <Notification>
//	    <Id>04l...</Id>
//	    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
//	     <sf:Id>006...</sf:Id><sf:StageName>Closed Won</sf:StageName>...
//	    </sObject>
//	   </Notification>  (up to 100)
//	  </notifications>
//	 </soapenv:Body>
//	</soapenv:Envelope>
//
// Unlike a change event, a notification carries the current value of every field the
// outbound message was set up with, so each Opportunity or Lead notification is a stage
// change: it must carry Id, StageName (Opportunity) or Status (Lead) and LastModifiedDate.

type sfOutboundEnvelope struct {
	XMLName xml.Name
	Body    *struct {
		Notifications *sfOutboundNotifications `xml:"notifications"`
	} `xml:"Body"`
}

type sfOutboundNotifications struct {
	OrganizationID string                   `xml:"OrganizationId"`
	Notifications  []sfOutboundNotification `xml:"Notification"`
}

type sfOutboundNotification struct {
	ID      string             `xml:"Id"`
	SObject *sfOutboundSObject `xml:"sObject"`
}

type sfOutboundSObject struct {
	Attrs  []xml.Attr        `xml:",any,attr"`
	Fields []sfOutboundField `xml:",any"`
}

type sfOutboundField struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Value   string     `xml:",chardata"`
}

// sfXMLAttr returns the value of the attribute with the given local name (xsi:type,
// xsi:nil), whatever prefix the sender bound.
func sfXMLAttr(attrs []xml.Attr, local string) string {
	for _, a := range attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

func (d *decoder) salesforceOutbound(payload []byte) *DecodeError {
	var env sfOutboundEnvelope
	dec := xml.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&env); err != nil {
		var se *xml.SyntaxError
		if errors.As(err, &se) {
			return decodeErr("", "malformed XML on line %d", se.Line)
		}
		return decodeErr("", "malformed XML")
	}
	if env.XMLName.Local != "Envelope" {
		return decodeErr("", "not a SOAP envelope (want soapenv:Envelope at the root)")
	}
	if env.Body == nil || env.Body.Notifications == nil {
		return decodeErr("Body.notifications", "required (not a Salesforce outbound message)")
	}
	org := strings.TrimSpace(env.Body.Notifications.OrganizationID)
	if len(org) > decMaxText {
		return decodeErr("OrganizationId", "is over the %d-byte limit", decMaxText)
	}
	for i, n := range env.Body.Notifications.Notifications {
		sc, ok, err := d.salesforceNotification(n, i)
		switch {
		case err != nil:
			d.bad(i, err)
		case !ok:
			d.out.Ignored++
		default:
			if org != "" {
				sc.Properties = map[string]string{"organization_id": org}
			}
			d.emit(sc)
		}
	}
	return nil
}

// salesforceNotification decodes one Notification; ok is false for objects other than
// Opportunity and Lead.
func (d *decoder) salesforceNotification(n sfOutboundNotification, index int) (StageChange, bool, *DecodeError) {
	if n.SObject == nil {
		return StageChange{}, false, decodeErr("sObject", "required")
	}
	typ := sfXMLAttr(n.SObject.Attrs, "type")
	if i := strings.LastIndexByte(typ, ':'); i >= 0 {
		typ = typ[i+1:]
	}
	stageField, objectType := salesforceStageField(typ)
	if stageField == "" {
		return StageChange{}, false, nil
	}
	obj := salesforceObject{entity: typ, fields: map[string]string{}}
	for _, f := range n.SObject.Fields {
		if strings.EqualFold(sfXMLAttr(f.Attrs, "nil"), "true") {
			continue
		}
		v := strings.TrimSpace(f.Value)
		if len(v) > 64<<10 {
			return StageChange{}, false, decodeErr("sObject."+f.XMLName.Local, "is over the 64 KiB limit")
		}
		obj.fields[f.XMLName.Local] = v
	}
	id := obj.fields["Id"]
	if id == "" {
		return StageChange{}, false, decodeErr("sObject.Id", "required")
	}
	if err := decCheckID(id, "sObject.Id"); err != nil {
		return StageChange{}, false, err
	}
	if obj.fields[stageField] == "" {
		return StageChange{}, false, decodeErr("sObject."+stageField, "required: add it to the outbound message's fields")
	}
	lm := obj.fields["LastModifiedDate"]
	if lm == "" {
		return StageChange{}, false, decodeErr("sObject.LastModifiedDate", "required: add it to the outbound message's fields")
	}
	when, err := decRFC3339(lm, "sObject.LastModifiedDate")
	if err != nil {
		return StageChange{}, false, err
	}
	sc, err := d.salesforceChange(obj, objectType, stageField, "sObject.", index)
	if err != nil {
		return StageChange{}, false, err
	}
	sc.ObjectID = id
	sc.OccurredAt = when
	return sc, true, nil
}
