package bench

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/crm"
)

// Dataset is a synthetic workload: subject i has one identity capture (gclid, email, phone,
// consent granted) and one won deal whose contact is subject i. Everything is derived from
// i, so a test knows every expected conversion key and every raw value to look for.
type Dataset struct {
	// Source is the CRM source of the stage changes and identity subjects.
	Source string
	// Prefix makes object and contact ids unique per run, so runs sharing a store differ.
	Prefix string
	// DealTag, when set, gives the deals other ids than another dataset with the same
	// Prefix: new conversions for the same (already stored) contacts.
	DealTag string
	// Now anchors the times: clicks and captures at Now-48h (older than Google's 6h minimum),
	// conversions at Now-24h (inside Meta's 7 days and Google's click window).
	Now time.Time
	// AllPlatforms gives each capture an msclkid and a li_fat_id too, for configs that send
	// to Microsoft Advertising and LinkedIn (All); without it a capture carries a gclid and
	// a ttclid, as the ingestion figures were measured.
	AllPlatforms bool
}

// ConvertedAt is when every generated deal was won (the stage change's occurred_at).
func (d Dataset) ConvertedAt() time.Time {
	return d.Now.Add(-24 * time.Hour).UTC().Truncate(time.Second)
}

// MSClickID is subject i's Microsoft click id (32 hex digits, as msclkid values are).
func (d Dataset) MSClickID(i int) string {
	h := fnv.New32a()
	h.Write([]byte(d.Prefix + "/" + d.DealTag))
	return fmt.Sprintf("%08x%024x", h.Sum32(), i)
}

// LiFatID is subject i's LinkedIn first-party ad tracking id.
func (d Dataset) LiFatID(i int) string { return "li-bench-" + d.Prefix + "-" + strconv.Itoa(i) }

// Rule is the mapping rule name the generated stage changes match.
const Rule = "closed-won"

// ContactID is subject i's CRM contact id.
func (d Dataset) ContactID(i int) string { return d.Prefix + "-C" + strconv.Itoa(i) }

// DealID is subject i's deal id.
func (d Dataset) DealID(i int) string { return d.Prefix + "-D" + d.DealTag + strconv.Itoa(i) }

// Email is subject i's raw email address.
func (d Dataset) Email(i int) string { return fmt.Sprintf("Buyer.%s.%d@Example.com", d.Prefix, i) }

// Phone is subject i's raw phone number as a form would capture it.
func (d Dataset) Phone(i int) string {
	return fmt.Sprintf("+1 (415) %03d-%04d", 200+(i/10000)%800, i%10000)
}

// PhoneE164 is Phone in E.164, PhoneDigits without the "+": the normalized raw forms.
func (d Dataset) PhoneE164(i int) string {
	return fmt.Sprintf("+1415%03d%04d", 200+(i/10000)%800, i%10000)
}

// RawPII lists every raw form of subject i's email and phone that must never be at rest,
// in a log line or in a dead-letter header.
func (d Dataset) RawPII(i int) []string {
	e := d.Email(i)
	p := d.PhoneE164(i)
	return []string{e, lower(e), d.Phone(i), p, p[1:]}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

type captureJSON struct {
	Subject    map[string]string `json:"subject"`
	CapturedAt string            `json:"captured_at"`
	ClickIDs   map[string]string `json:"click_ids"`
	Email      string            `json:"email"`
	Phone      string            `json:"phone"`
	Consent    map[string]string `json:"consent"`
}

// Identity is subject i's identity capture as a Kafka message (canonical JSON).
func (d Dataset) Identity(i int) kafka.Message {
	clicks := map[string]string{
		"gclid":  "Cj0KCQbench" + d.Prefix + strconv.Itoa(i),
		"ttclid": "E.C.P.bench" + d.Prefix + strconv.Itoa(i),
	}
	if d.AllPlatforms {
		clicks["msclkid"] = d.MSClickID(i)
		clicks["li_fat_id"] = d.LiFatID(i)
	}
	v, _ := json.Marshal(captureJSON{
		Subject:    map[string]string{"type": "contact", "source": d.Source, "id": d.ContactID(i)},
		CapturedAt: d.Now.Add(-48 * time.Hour).UTC().Format(time.RFC3339),
		ClickIDs:   clicks,
		Email:      d.Email(i),
		Phone:      d.Phone(i),
		Consent:    map[string]string{"ad_user_data": "granted", "ad_personalization": "granted"},
	})
	return kafka.Message{Key: []byte(d.ContactID(i)), Value: v}
}

type stageJSON struct {
	Source     string   `json:"source"`
	ObjectType string   `json:"object_type"`
	ObjectID   string   `json:"object_id"`
	Pipeline   string   `json:"pipeline"`
	Stage      string   `json:"stage"`
	Status     string   `json:"status"`
	OccurredAt string   `json:"occurred_at"`
	Amount     string   `json:"amount"`
	Currency   string   `json:"currency"`
	ContactIDs []string `json:"contact_ids"`
}

// StageChange is subject i's won deal as a Kafka message (canonical JSON).
func (d Dataset) StageChange(i int) kafka.Message {
	v, _ := json.Marshal(stageJSON{
		Source: d.Source, ObjectType: "deal", ObjectID: d.DealID(i), Pipeline: "default",
		Stage: "closedwon", Status: "won",
		OccurredAt: d.ConvertedAt().Format(time.RFC3339),
		Amount:     fmt.Sprintf("%d.%02d", 100+i%5000, i%100), Currency: "USD",
		ContactIDs: []string{d.ContactID(i)},
	})
	return kafka.Message{Key: []byte(d.DealID(i)), Value: v}
}

// Key is the conversion key of subject i's deal for destination (crm.ConversionKey).
func (d Dataset) Key(i int, destination string) string {
	return crm.ConversionKey(d.Source, "deal", d.DealID(i), Rule, destination)
}

// BadStageChange is the j-th kind of invalid stage change (cycling through malformed JSON,
// an unknown click-ID type, a missing occurred_at and an unknown field carrying raw PII),
// keyed "bad-<prefix>-<j>" so its dead letter can be found. Some carry subject j's raw
// email or phone, which may sit in the dead letter's value (the original bytes) but never
// in a header, a log line or a table.
func (d Dataset) BadStageChange(j int) kafka.Message {
	var v string
	switch j % 4 {
	case 0:
		v = `{"source":"` + d.Source + `","object_type":"deal","object_id":"X` + strconv.Itoa(j) + `",`
	case 1:
		v = fmt.Sprintf(`{"source":%q,"object_type":"deal","object_id":"B%d","stage":"closedwon","status":"won","occurred_at":%q,"email":%q,"click_ids":{"dclid":"x"}}`,
			d.Source, j, d.Now.Add(-24*time.Hour).UTC().Format(time.RFC3339), d.Email(j))
	case 2:
		v = fmt.Sprintf(`{"source":%q,"object_type":"deal","object_id":"B%d","stage":"closedwon","phone":%q}`, d.Source, j, d.Phone(j))
	default:
		v = fmt.Sprintf(`{"source":%q,"object_type":"deal","object_id":"B%d","stage":"closedwon","occurred_at":%q,"contact_email":%q}`,
			d.Source, j, d.Now.Add(-24*time.Hour).UTC().Format(time.RFC3339), d.Email(j))
	}
	return kafka.Message{Key: []byte(d.BadKey("s", j)), Value: []byte(v)}
}

// BadIdentity is the j-th kind of invalid identity capture (no subject, an unparseable
// phone, an unknown click-ID type, a naive timestamp), keyed like BadStageChange.
func (d Dataset) BadIdentity(j int) kafka.Message {
	at := d.Now.Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	var v string
	switch j % 4 {
	case 0:
		v = fmt.Sprintf(`{"captured_at":%q,"email":%q}`, at, d.Email(j))
	case 1:
		v = fmt.Sprintf(`{"subject":{"type":"contact","source":%q,"id":"B%d"},"captured_at":%q,"phone":"call me maybe"}`, d.Source, j, at)
	case 2:
		v = fmt.Sprintf(`{"subject":{"type":"contact","source":%q,"id":"B%d"},"captured_at":%q,"click_ids":{"dclid":"x"},"email":%q}`, d.Source, j, at, d.Email(j))
	default:
		v = fmt.Sprintf(`{"subject":{"type":"contact","source":%q,"id":"B%d"},"captured_at":"2026-01-01 10:00:00","phone":%q}`, d.Source, j, d.Phone(j))
	}
	return kafka.Message{Key: []byte(d.BadKey("i", j)), Value: []byte(v)}
}

// BadKey is the Kafka key of the j-th bad message of kind ("s" stage, "i" identity).
func (d Dataset) BadKey(kind string, j int) string {
	return "bad-" + kind + "-" + d.Prefix + "-" + strconv.Itoa(j)
}
