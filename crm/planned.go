package crm

import (
	"time"

	"github.com/shopspring/decimal"
)

// Planned is one conversion a mapping rule asks for: what to send, where, with what value.
// The consumer turns it into a store.Conversion after the identity join.
type Planned struct {
	Rule           string           // the mapping rule's name
	Destination    string           // a key of the config's destinations
	Platform       string           // google | google_ads | meta | tiktok | microsoft | linkedin
	ConversionName string           // Google conversion action id, Meta/TikTok event name, ...
	Value          *decimal.Decimal // nil when the rule gives no value
	Currency       string
	// ValueReason says why Value (or Currency) is empty although the rule asks for a value
	// (ValueReasonFieldMissing, ...); "" otherwise. The conversion is sent without a value.
	ValueReason string
	// Rejected is a reason code when the conversion must never be sent
	// (ReasonInvalidCurrency); RejectedDetail then names the field at fault, never its
	// value. It is still planned, so the store keeps it rejected and the report shows it.
	Rejected       string
	RejectedDetail string
	OccurredAt     time.Time
	// Retract is true when this stage change takes back an earlier conversion of Rule
	// (closed-lost after closed-won). Key is then the retraction row's own key and
	// RetractsKey names the conversion to retract.
	Retract     bool
	Key         string // the conversion key (see ConversionKey)
	RetractsKey string // for a retraction: the key of the conversion it takes back
	// RestateKey is set on a conversion of a rule with restate_on whose value is known:
	// should the conversion (Key) exist already with another value, this change restates
	// it, in a row of its own keyed RestateKey (see RestateKey). "" = no restatement.
	RestateKey string
	// MappingVersion identifies the mapping file content that produced this plan.
	MappingVersion string
}
