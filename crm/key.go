package crm

import (
	"crypto/sha256"
	"encoding/hex"
)

// ConversionKey is the stable identity of one conversion: a deal is won once per rule and
// destination, whatever the replays and duplicates. It is the store's unique key and the
// platform's dedup key (orderId / transactionId / event_id), so 32 hex characters keep it
// inside every platform's length limit.
func ConversionKey(source, objectType, objectID, rule, destination string) string {
	h := sha256.New()
	for _, part := range []string{source, objectType, objectID, rule, destination} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
