package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/crmsandbox"
	"github.com/closedloop/closedloop/internal/pii"
)

// thinData is the enrichment proof's workload: native webhooks as each CRM sends them,
// carrying no contact data, and the CRM emulator holding what they lack. Everything is
// derived from the deal's index, so the test knows every key, value and identifier.
//
//   - HubSpot deal i (id 9000000+i): a deal.propertyChange of dealstage to closedwon (no
//     amount, no contacts). Deals 2j and 2j+1 share contact 200000+j (an email, and a gclid
//     on every third); every fifth deal also has a phone-only contact 300000+i.
//   - Pipedrive deal i (id 5000+i): a v2 change to status won with its value and person
//     7000+i, whose email only the API has.
//   - Close opportunity i: a status change to won with its value in cents and lead_id; the
//     lead's first contact has nothing, its second the email.
type thinData struct {
	now  time.Time
	norm pii.Normalizer
}

const (
	hubspotDeals = 5000
	hubspotBatch = 100 // events per HubSpot webhook request
	pipedriveN   = 150
	closeN       = 150
	renewals     = 300 // HubSpot deals that move on to a second mapped stage after the drain
	salesforceN  = 150
	attioN       = 150
)

// Rules of the enrichment proof's mapping.
const (
	ruleHSWon      = "hs-won"
	ruleHSRenewal  = "hs-renewal"
	rulePDWon      = "pd-won"
	ruleCloseWon   = "close-won"
	ruleSFWon      = "sf-won"
	ruleAttioWon   = "attio-won"
	attioStageAttr = "41252299-f8c7-4b5e-99c9-4ff8321d2f96"
	attioObjectID  = "97052eb9-e65e-443f-a297-f2d9a4a7f795"
	enrichDataset  = "123456789012345"
	enrichDestName = destMeta
)

func (d thinData) hsDeal(i int) string    { return strconv.Itoa(9000000 + i) }
func (d thinData) hsContact(i int) string { return strconv.Itoa(200000 + i/2) }
func (d thinData) hsPhoneContact(i int) (string, bool) {
	return strconv.Itoa(300000 + i), i%5 == 0
}
func (d thinData) hsAmount(i int) string { return fmt.Sprintf("%d.%02d", 200+i%3000, i%100) }
func (d thinData) hsEmail(i int) string  { return fmt.Sprintf("hs.buyer.%d@example.com", i/2) }

func (d thinData) pdDeal(i int) string   { return strconv.Itoa(5000 + i) }
func (d thinData) pdPerson(i int) string { return strconv.Itoa(7000 + i) }
func (d thinData) pdAmount(i int) string { return strconv.Itoa(300 + i) }
func (d thinData) pdEmail(i int) string  { return fmt.Sprintf("pd.person.%d@example.com", i) }

func (d thinData) closeOpp(i int) string    { return fmt.Sprintf("oppo_e2e%04d", i) }
func (d thinData) closeLead(i int) string   { return fmt.Sprintf("lead_e2e%04d", i) }
func (d thinData) closeFirst(i int) string  { return fmt.Sprintf("cont_e2e%04da", i) }
func (d thinData) closeSecond(i int) string { return fmt.Sprintf("cont_e2e%04db", i) }
func (d thinData) closeCents(i int) int     { return 10000 + 37*i }
func (d thinData) closeEmail(i int) string  { return fmt.Sprintf("close.contact.%d@example.com", i) }

func (d thinData) sfOpp(i int) string     { return fmt.Sprintf("0065g%010dAAZ", i) }
func (d thinData) sfContact(i int) string { return fmt.Sprintf("0035g%010dAAV", i) }
func (d thinData) sfAmount(i int) string  { return strconv.Itoa(900 + i) }
func (d thinData) sfEmail(i int) string   { return fmt.Sprintf("sf.contact.%d@example.com", i) }

func (d thinData) attioRecord(i int) string { return fmt.Sprintf("bf071e1f-6035-429d-b874-%012d", i) }
func (d thinData) attioPerson(i int) string { return fmt.Sprintf("891dcbfc-9141-415d-9b2a-%012d", i) }
func (d thinData) attioAmount(i int) string { return fmt.Sprintf("%d.5", 40+i) }
func (d thinData) attioEmail(i int) string  { return fmt.Sprintf("attio.person.%d@example.com", i) }

// emailHash is the hash the uploader must send for raw.
func (d thinData) emailHash(raw string) string {
	set := pii.Set{}
	if err := d.norm.Add(set, pii.Email, raw); err != nil {
		panic(err)
	}
	return set.Get(pii.KeyEmail)
}

// expect is what one conversion must end with.
type expect struct {
	value     float64
	currency  string
	emailHash string
}

// expected returns every conversion key of the proof and what it must carry.
func (d thinData) expected() map[string]expect {
	out := map[string]expect{}
	for i := range hubspotDeals {
		v, _ := strconv.ParseFloat(d.hsAmount(i), 64)
		e := expect{value: v, currency: "EUR", emailHash: d.emailHash(d.hsEmail(i))}
		out[crm.ConversionKey(crmsandbox.HubSpot, crm.ObjectDeal, d.hsDeal(i), ruleHSWon, enrichDestName)] = e
		if i < renewals {
			out[crm.ConversionKey(crmsandbox.HubSpot, crm.ObjectDeal, d.hsDeal(i), ruleHSRenewal, enrichDestName)] = e
		}
	}
	for i := range pipedriveN {
		v, _ := strconv.ParseFloat(d.pdAmount(i), 64)
		out[crm.ConversionKey(crmsandbox.Pipedrive, crm.ObjectDeal, d.pdDeal(i), rulePDWon, enrichDestName)] = expect{value: v, currency: "USD", emailHash: d.emailHash(d.pdEmail(i))}
	}
	for i := range salesforceN {
		v, _ := strconv.ParseFloat(d.sfAmount(i), 64)
		out[crm.ConversionKey(crmsandbox.Salesforce, crm.ObjectOpportunity, d.sfOpp(i), ruleSFWon, enrichDestName)] = expect{value: v, currency: "EUR", emailHash: d.emailHash(d.sfEmail(i))}
	}
	for i := range attioN {
		v, _ := strconv.ParseFloat(d.attioAmount(i), 64)
		out[crm.ConversionKey(crmsandbox.Attio, crm.ObjectDeal, d.attioRecord(i), ruleAttioWon, enrichDestName)] = expect{value: v, currency: "GBP", emailHash: d.emailHash(d.attioEmail(i))}
	}
	for i := range closeN {
		out[crm.ConversionKey(crmsandbox.Close, crm.ObjectOpportunity, d.closeOpp(i), ruleCloseWon, enrichDestName)] = expect{
			value: float64(d.closeCents(i)) / 100, currency: "USD", emailHash: d.emailHash(d.closeEmail(i))}
	}
	return out
}

// seed fills the CRM emulator.
func (d thinData) seed(sb *crmsandbox.Server) {
	for i := range hubspotDeals {
		contacts := []string{d.hsContact(i)}
		if pc, ok := d.hsPhoneContact(i); ok {
			contacts = append(contacts, pc)
			sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: pc, Phones: []string{fmt.Sprintf("(415) 555-%04d", i%10000)}})
		}
		sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: d.hsDeal(i), Amount: d.hsAmount(i), Currency: "eur", ContactIDs: contacts})
		if i%2 == 0 {
			c := crmsandbox.Contact{ID: d.hsContact(i), Emails: []string{d.hsEmail(i)}}
			if i%3 == 0 {
				c.ClickIDs = map[string]string{"gclid": "Cj0KCQiA-enrich-" + strconv.Itoa(i)}
			}
			sb.AddContact(crmsandbox.HubSpot, c)
		}
	}
	for i := range pipedriveN {
		sb.AddDeal(crmsandbox.Pipedrive, crmsandbox.Deal{ID: d.pdDeal(i), Amount: d.pdAmount(i), Currency: "USD", ContactIDs: []string{d.pdPerson(i)}})
		sb.AddContact(crmsandbox.Pipedrive, crmsandbox.Contact{ID: d.pdPerson(i), Emails: []string{d.pdEmail(i)}})
	}
	for i := range salesforceN {
		sb.AddDeal(crmsandbox.Salesforce, crmsandbox.Deal{ID: d.sfOpp(i), Amount: d.sfAmount(i), Currency: "EUR", ContactIDs: []string{d.sfContact(i)}})
		sb.AddContact(crmsandbox.Salesforce, crmsandbox.Contact{ID: d.sfContact(i), Emails: []string{d.sfEmail(i)}})
	}
	for i := range attioN {
		sb.AddDeal(crmsandbox.Attio, crmsandbox.Deal{ID: d.attioRecord(i), Amount: d.attioAmount(i), Currency: "GBP",
			ContactIDs: []string{d.attioPerson(i)}, Stage: "Won 🎉", StageAttribute: attioStageAttr, StageAt: d.now.Add(-time.Hour)})
		sb.AddContact(crmsandbox.Attio, crmsandbox.Contact{ID: d.attioPerson(i), Emails: []string{d.attioEmail(i)}})
	}
	for i := range closeN {
		sb.AddDeal(crmsandbox.Close, crmsandbox.Deal{ID: d.closeOpp(i), Amount: fmt.Sprintf("%d.%02d", d.closeCents(i)/100, d.closeCents(i)%100),
			Currency: "USD", LeadID: d.closeLead(i), ContactIDs: []string{d.closeFirst(i), d.closeSecond(i)}})
		sb.AddContact(crmsandbox.Close, crmsandbox.Contact{ID: d.closeFirst(i)})
		sb.AddContact(crmsandbox.Close, crmsandbox.Contact{ID: d.closeSecond(i), Emails: []string{d.closeEmail(i)}})
	}
}

func withFormat(format string, key string, v any) kafka.Message {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // fixed shapes
	}
	return kafka.Message{Key: []byte(key), Value: b, Headers: []kafka.Header{{Key: "closedloop-format", Value: []byte(format)}}}
}

// hubspotWebhooks are HubSpot's webhook requests moving deals [from, to) to stage, up to
// 100 events each, as HubSpot batches them.
func (d thinData) hubspotWebhooks(from, to int, stage string, at time.Time) []kafka.Message {
	var out []kafka.Message
	for start := from; start < to; start += hubspotBatch {
		var events []map[string]any
		for i := start; i < min(to, start+hubspotBatch); i++ {
			n, _ := strconv.Atoi(d.hsDeal(i))
			events = append(events, map[string]any{
				"eventId": 100000 + i, "subscriptionId": 501, "portalId": 62515, "appId": 1160452,
				"occurredAt": at.UnixMilli(), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
				"objectId": n, "changeSource": "CRM_UI", "propertyName": "dealstage", "propertyValue": stage,
			})
		}
		out = append(out, withFormat(crm.FormatHubSpot, "portal-62515", events))
	}
	return out
}

// pipedriveWebhook is Pipedrive's v2 webhook of deal i won.
func (d thinData) pipedriveWebhook(i int, at time.Time) kafka.Message {
	n, _ := strconv.Atoi(d.pdDeal(i))
	p, _ := strconv.Atoi(d.pdPerson(i))
	v, _ := strconv.Atoi(d.pdAmount(i))
	return withFormat(crm.FormatPipedrive, d.pdDeal(i), map[string]any{
		"meta": map[string]any{"action": "change", "entity": "deal", "entity_id": d.pdDeal(i), "timestamp": at.Unix(),
			"version": "2.0", "type": "general", "host": "example.pipedrive.com", "attempt": 1},
		"data": map[string]any{"id": n, "stage_id": 9, "pipeline_id": 2, "status": "won", "value": v, "currency": "USD",
			"person_id": p, "update_time": rfc3339(at), "won_time": rfc3339(at)},
		"previous": map[string]any{"status": "open"},
	})
}

// salesforceWebhook is a Change Data Capture event of opportunity i's stage changed to
// Closed Won: only the changed field, no amount, no contacts.
func (d thinData) salesforceWebhook(i int, at time.Time) kafka.Message {
	return withFormat(crm.FormatSalesforce, d.sfOpp(i), map[string]any{
		"ChangeEventHeader": map[string]any{"entityName": "Opportunity", "changeType": "UPDATE", "recordIds": []string{d.sfOpp(i)},
			"commitTimestamp": at.UnixMilli(), "changeOrigin": "com/salesforce/api/soap/61.0;client=e2e", "transactionKey": fmt.Sprintf("tx-%d", i),
			"sequenceNumber": 1, "commitUser": "005xx000001X8Uz", "changedFields": []string{"StageName", "LastModifiedDate"}},
		"StageName": "Closed Won", "LastModifiedDate": rfc3339(at),
	})
}

// attioWebhook is Attio's record.updated of record i's stage attribute: ids only.
func (d thinData) attioWebhook(i int) kafka.Message {
	return withFormat(crm.FormatAttio, d.attioRecord(i), map[string]any{
		"webhook_id": "23e42eaf-323a-41da-b5bb-fd67eebda553",
		"events": []map[string]any{{"event_type": "record.updated",
			"id": map[string]any{"workspace_id": "14beef7a-99f7-4534-a87e-70b564330a4c", "object_id": attioObjectID,
				"record_id": d.attioRecord(i), "attribute_id": attioStageAttr},
			"actor": map[string]any{"type": "workspace-member", "id": "50cf242c-7fa3-4cad-87d0-75b1af71c57b"}}},
	})
}

// closeWebhook is Close's webhook of opportunity i's status changed to won.
func (d thinData) closeWebhook(i int, at time.Time) kafka.Message {
	ts := at.UTC().Format("2006-01-02T15:04:05.000000")
	return withFormat(crm.FormatClose, d.closeOpp(i), map[string]any{
		"subscription_id": "whsub_e2e",
		"event": map[string]any{
			"id": fmt.Sprintf("ev_e2e%04d", i), "action": "updated", "object_type": "opportunity",
			"object_id": d.closeOpp(i), "lead_id": d.closeLead(i), "date_created": ts, "date_updated": ts,
			"organization_id": "orga_e2e", "user_id": "user_e2e",
			"changed_fields": []string{"date_updated", "status_id", "status_label", "status_type"},
			"previous_data":  map[string]any{"status_type": "active", "status_id": "stat_active", "status_label": "Active"},
			"data": map[string]any{
				"id": d.closeOpp(i), "lead_id": d.closeLead(i), "contact_id": d.closeFirst(i),
				"status_type": "won", "status_id": "stat_won", "status_label": "Won",
				"value": d.closeCents(i), "value_currency": "USD", "value_period": "one_time",
				"date_updated": rfc3339(at), "organization_id": "orga_e2e",
			},
		},
	})
}

// sentEvent is what one Meta event that reached the platform carried.
type sentEvent struct {
	value    *float64
	currency string
	em       []string
}

// recordingProxy forwards every request to the platform sandbox and keeps, per Meta
// event_id, every event body sent: what the platform saw, not what the store says.
type recordingProxy struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	sent  map[string][]sentEvent
}

func newRecordingProxy(target string) (*recordingProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	return &recordingProxy{proxy: httputil.NewSingleHostReverseProxy(u), sent: map[string][]sentEvent{}}, nil
}

func (p *recordingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.Body != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct {
			Data []struct {
				EventID  string `json:"event_id"`
				UserData struct {
					Em []string `json:"em"`
				} `json:"user_data"`
				CustomData struct {
					Value    *float64 `json:"value"`
					Currency string   `json:"currency"`
				} `json:"custom_data"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &req) == nil {
			p.mu.Lock()
			for _, e := range req.Data {
				p.sent[e.EventID] = append(p.sent[e.EventID], sentEvent{value: e.CustomData.Value, currency: e.CustomData.Currency, em: e.UserData.Em})
			}
			p.mu.Unlock()
		}
	}
	p.proxy.ServeHTTP(w, r)
}

func (p *recordingProxy) events() map[string][]sentEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]sentEvent, len(p.sent))
	for k, v := range p.sent {
		out[k] = append([]sentEvent(nil), v...)
	}
	return out
}
