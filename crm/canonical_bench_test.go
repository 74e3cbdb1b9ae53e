package crm_test

import (
	"testing"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

// BenchmarkDecodeCanonical decodes the won-deal stage change `make bench` produces, and
// one carrying a raw email (hashed on arrival).
//
//	go test ./crm -run '^$' -bench DecodeCanonical -benchmem
func BenchmarkDecodeCanonical(b *testing.B) {
	for _, c := range []struct{ name, payload string }{
		{"deal", `{"source":"bench","object_type":"deal","object_id":"b-D12345","pipeline":"default","stage":"closedwon","status":"won","occurred_at":"2026-11-24T22:39:20Z","amount":"123.45","currency":"USD","contact_ids":["b-C12345"]}`},
		{"email", `{"source":"bench","object_type":"deal","object_id":"b-D12345","stage":"closedwon","occurred_at":"2026-11-24T22:39:20Z","amount":"123.45","currency":"USD","contact_ids":["b-C12345"],"email":"Buyer.b.12345@Example.com","click_ids":{"gclid":"Cj0KCQbench12345"}}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := pii.Normalizer{DefaultRegion: "US"}
			payload := []byte(c.payload)
			b.ReportAllocs()
			for b.Loop() {
				d, err := crm.Decode(crm.FormatCanonical, payload, n)
				if err != nil || len(d.Changes) != 1 {
					b.Fatalf("decode: %v %+v", err, d)
				}
			}
		})
	}
}
