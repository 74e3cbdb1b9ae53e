package demo

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/internal/crmsandbox"
)

// The sample: ten leads whose fate is known. All email addresses are on example.com and
// phones are fictional 555 numbers; the worker hashes them on arrival.
//
//	lead  format      what happens
//	A     canonical   won, every click id, sent twice (duplicate)   → accepted everywhere once
//	B     canonical   won, then lost                                → accepted; retracted on Microsoft, the
//	                  retraction skipped elsewhere (Data Manager, Meta, TikTok, LinkedIn cannot retract)
//	C     hubspot     deal reaches qualifiedtobuy, batch redelivered → sales-accepted on Google once
//	D     salesforce  opportunity Closed Won (CDC)                  → accepted everywhere
//	E     pipedrive   deal status won (webhook v2)                  → accepted everywhere
//	F     canonical   won before its identity arrives (late)        → waits, then released and accepted
//	G     canonical   won, consent ad_user_data denied              → skipped everywhere (consent_denied)
//	H     canonical   won 10 days ago                               → Meta expired (7-day window); others accepted
//	I     canonical   won, no identity ever captured                → awaiting identity
//	J     garbage     not JSON                                      → dead-letter topic
//	K     hubspot     thin deal webhook: closedwon, no amount, no contact → enriched from the
//	                  CRM emulator (amount, currency, contact email, gclid) → accepted everywhere
//
// The HubSpot batch also carries a contact lifecycle change no rule matches (counted) and
// a deal.creation event (ignored).

// Message is one record to publish.
type Message struct {
	Topic string
	kafka.Message
}

// Truth is what the sample must produce, per destination and conversion.
type Truth struct {
	Destination, Conversion string
	Created, Accepted       int
	Rejected, Expired       int
	Skipped, Awaiting       int
}

// SampleTruth is the known outcome of the sample.
var SampleTruth = []Truth{
	{Destination: "google-ads", Conversion: "111111111", Created: 1, Accepted: 1},
	// A B D E F G H I K, plus B's retraction.
	{Destination: "google-ads", Conversion: "987654321", Created: 10, Accepted: 7, Skipped: 2, Awaiting: 1},
	{Destination: "meta-crm", Conversion: "Purchase", Created: 10, Accepted: 6, Expired: 1, Skipped: 2, Awaiting: 1},
	{Destination: "tiktok-crm", Conversion: "CompletePayment", Created: 10, Accepted: 7, Skipped: 2, Awaiting: 1},
	// Microsoft (90-day window) and LinkedIn (90 days) take H; both match on the hashed email.
	// Microsoft retracts B (OfflineConversionAdjustments/Apply Retract).
	{Destination: "microsoft-crm", Conversion: "Closed Won", Created: 10, Accepted: 8, Skipped: 1, Awaiting: 1},
	{Destination: "linkedin-crm", Conversion: "123456", Created: 10, Accepted: 7, Skipped: 2, Awaiting: 1},
}

// SampleDeadLetters is how many messages of the sample go to the dead-letter topic.
const SampleDeadLetters = 1

type clickAt struct {
	ID        string `json:"id"`
	ClickedAt string `json:"clicked_at"`
}

type capture struct {
	Subject    map[string]string  `json:"subject"`
	CapturedAt string             `json:"captured_at"`
	ClickIDs   map[string]clickAt `json:"click_ids,omitempty"`
	Email      string             `json:"email,omitempty"`
	Phone      string             `json:"phone,omitempty"`
	FirstName  string             `json:"first_name,omitempty"`
	Country    string             `json:"country,omitempty"`
	IP         string             `json:"ip,omitempty"`
	UserAgent  string             `json:"user_agent,omitempty"`
	Consent    map[string]string  `json:"consent,omitempty"`
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // static sample data: a marshal error is a programming error
	}
	return b
}

func identityMsg(c capture) Message {
	key := c.Subject["source"] + ":" + c.Subject["type"] + ":" + c.Subject["id"]
	return Message{Topic: IdentityTopic, Message: kafka.Message{Key: []byte(key), Value: mustJSON(c)}}
}

func stageMsg(format, key string, value []byte) Message {
	return Message{Topic: StageTopic, Message: kafka.Message{
		Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: "closedloop-format", Value: []byte(format)}},
	}}
}

func canonical(id, status string, at time.Time, amount float64, currency string) Message {
	return stageMsg("canonical", "relay:deal:"+id, mustJSON(map[string]any{
		"source": "relay", "object_type": "deal", "object_id": id, "pipeline": "default",
		"stage": "closed-" + status, "status": status, "occurred_at": rfc(at),
		"amount": amount, "currency": currency,
	}))
}

var granted = map[string]string{"ad_user_data": "granted", "ad_personalization": "granted"}

// Sample returns the sample in two phases: first, then later (after the first has been
// consumed): the late identity and the closed-lost retraction.
func Sample(now time.Time) (first, later []Message) {
	day := 24 * time.Hour
	won := now.Add(-day)               // deals closed yesterday
	click := now.Add(-5 * day)         // clicked five days ago
	captured := click.Add(time.Minute) // the lead form a minute after the click
	subject := func(source, typ, id string) map[string]string {
		return map[string]string{"source": source, "type": typ, "id": id}
	}
	clicks := func(kv ...string) map[string]clickAt {
		m := map[string]clickAt{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = clickAt{ID: kv[i+1], ClickedAt: rfc(click)}
		}
		return m
	}

	first = []Message{
		// Identities captured at lead time.
		identityMsg(capture{Subject: subject("relay", "deal", "D-1001"), CapturedAt: rfc(captured),
			ClickIDs: clicks("gclid", "Cj0KCQiA-demoA", "fbclid", "IwAR-demoA", "ttclid", "E.C.P.demoA",
				"msclkid", "d3m0a0000000000000000000000000aa", "li_fat_id", "d3m0a000-0000-4000-8000-0000000000aa"),
			Email: "Ada.Lovelace@example.com", Phone: "(415) 555-0101", FirstName: "Ada", Country: "US",
			IP: "203.0.113.10", UserAgent: "Mozilla/5.0 (demo)", Consent: granted}),
		identityMsg(capture{Subject: subject("relay", "deal", "D-1002"), CapturedAt: rfc(captured),
			ClickIDs: clicks("gclid", "Cj0KCQiA-demoB"), Email: "grace.hopper@example.com", Consent: granted}),
		identityMsg(capture{Subject: subject("hubspot", "deal", "9001"), CapturedAt: rfc(captured),
			ClickIDs: clicks("gclid", "Cj0KCQiA-demoC"), Email: "katherine@example.com", Consent: granted}),
		identityMsg(capture{Subject: subject("salesforce", "opportunity", "0065g00000DemoDAAV"), CapturedAt: rfc(captured),
			ClickIDs: clicks("fbc", fmt.Sprintf("fb.1.%d.IwAR-demoD", click.UnixMilli())),
			Email:    "dorothy@example.com", Phone: "+1 415 555 0104", Consent: granted}),
		identityMsg(capture{Subject: subject("pipedrive", "deal", "77"), CapturedAt: rfc(captured),
			ClickIDs: clicks("ttclid", "E.C.P.demoE"), Email: "edsger@example.com", Consent: granted}),
		identityMsg(capture{Subject: subject("relay", "deal", "D-1007"), CapturedAt: rfc(captured),
			ClickIDs: clicks("gclid", "Cj0KCQiA-demoG"), Email: "gdpr.careful@example.com",
			Consent: map[string]string{"ad_user_data": "denied", "ad_personalization": "denied"}}),
		identityMsg(capture{Subject: subject("relay", "deal", "D-1008"), CapturedAt: rfc(now.Add(-15 * day)),
			ClickIDs: map[string]clickAt{"gclid": {ID: "Cj0KCQiA-demoH", ClickedAt: rfc(now.Add(-15 * day))}},
			Email:    "henrietta@example.com", Consent: granted}),

		// Stage changes, in every format.
		canonical("D-1001", "won", won, 12500, "EUR"),
		canonical("D-1001", "won", won, 12500, "EUR"), // the relay retried: a duplicate
		canonical("D-1002", "won", won, 3000, "USD"),
		stageMsg("hubspot", "hubspot:62515", hubspotBatch(won)),
		stageMsg("hubspot", "hubspot:62515", hubspotBatch(won)), // HubSpot redelivered the batch
		stageMsg("salesforce", "salesforce:0065g00000DemoDAAV", salesforceCDC(won)),
		stageMsg("pipedrive", "pipedrive:77", pipedriveV2(won)),
		canonical("D-1006", "won", won, 4000, "USD"), // its identity arrives later
		canonical("D-1007", "won", won, 2500, "USD"),
		canonical("D-1008", "won", now.Add(-10*day), 7000, "USD"),
		canonical("D-1009", "won", won, 900, "USD"),               // no identity, ever
		stageMsg("hubspot", "hubspot:62515", hubspotThinWon(won)), // K: enriched from the CRM
		stageMsg("canonical", "relay:deal:broken", []byte(`{"source":"relay","object_type":"deal",`)),
	}
	later = []Message{
		identityMsg(capture{Subject: subject("relay", "deal", "D-1006"), CapturedAt: rfc(captured),
			ClickIDs: clicks("gclid", "Cj0KCQiA-demoF", "ttclid", "E.C.P.demoF"), Email: "frances@example.com",
			Phone: "415-555-0106", Consent: granted}),
		canonical("D-1002", "lost", now.Add(-time.Hour), 3000, "USD"),
	}
	return first, later
}

func hubspotBatch(at time.Time) []byte {
	ms := at.UnixMilli()
	return mustJSON([]map[string]any{
		{"eventId": 5001, "subscriptionId": 501, "portalId": 62515, "appId": 1160452, "occurredAt": ms,
			"subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": 9001,
			"changeSource": "CRM_UI", "propertyName": "dealstage", "propertyValue": "qualifiedtobuy"},
		{"eventId": 5002, "subscriptionId": 504, "portalId": 62515, "appId": 1160452, "occurredAt": ms + 1,
			"subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 31,
			"changeSource": "CRM_UI", "propertyName": "lifecyclestage", "propertyValue": "salesqualifiedlead"},
		{"eventId": 5003, "subscriptionId": 505, "portalId": 62515, "appId": 1160452, "occurredAt": ms + 2,
			"subscriptionType": "deal.creation", "attemptNumber": 0, "objectId": 9005, "changeSource": "CRM_UI"},
	})
}

// Lead K: a thin HubSpot deal webhook and what the CRM emulator holds for it.
const (
	ThinDealID       = "9101"
	ThinDealAmount   = 6400.0
	ThinDealCurrency = "EUR"
)

func hubspotThinWon(at time.Time) []byte {
	return mustJSON([]map[string]any{
		{"eventId": 5101, "subscriptionId": 501, "portalId": 62515, "appId": 1160452, "occurredAt": at.UnixMilli(),
			"subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": 9101,
			"changeSource": "CRM_UI", "propertyName": "dealstage", "propertyValue": "closedwon"},
	})
}

// SeedCRM fills the CRM emulator with the HubSpot deals of the sample: K (thin, enriched)
// and C (whose identity is captured, so it is fetched only if its stage change is consumed
// before its identity).
func SeedCRM(sb *crmsandbox.Server) {
	sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: ThinDealID, Amount: "6400", Currency: "eur", ContactIDs: []string{"601"}})
	sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "601", Emails: []string{"kay.thin@example.com"},
		ClickIDs: map[string]string{"gclid": "Cj0KCQiA-demoK"}})
	sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "9001", Currency: "USD", ContactIDs: []string{"602"}})
	sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "602", Emails: []string{"katherine@example.com"}})
}

func salesforceCDC(at time.Time) []byte {
	return mustJSON(map[string]any{
		"ChangeEventHeader": map[string]any{
			"entityName": "Opportunity", "recordIds": []string{"0065g00000DemoDAAV"}, "changeType": "UPDATE",
			"commitTimestamp": at.UnixMilli(), "commitUser": "0055g00000XyZaBAAV",
			"changedFields": []string{"StageName", "IsWon", "IsClosed", "Amount", "LastModifiedDate"},
		},
		"StageName": "Closed Won", "IsWon": true, "IsClosed": true, "Amount": 8000, "CurrencyIsoCode": "USD",
	})
}

func pipedriveV2(at time.Time) []byte {
	t := at.UTC().Format("2006-01-02T15:04:05Z")
	return mustJSON(map[string]any{
		"meta": map[string]any{"action": "change", "entity": "deal", "entity_id": "77", "version": "2.0",
			"timestamp": at.UTC().Format("2006-01-02T15:04:05.000Z"), "company_id": "7654321"},
		"data": map[string]any{"id": 77, "person_id": 18, "pipeline_id": 1, "stage_id": 5, "status": "won",
			"value": 2000, "currency": "USD", "update_time": t, "won_time": t, "title": "Demo deal E"},
		"previous": map[string]any{"status": "open"},
	})
}
