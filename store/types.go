package store

import (
	"time"

	"github.com/closedloop/closedloop/internal/pii"
)

// Consent values as captured from a lead form.
const (
	ConsentGranted = "granted"
	ConsentDenied  = "denied"
	ConsentUnknown = "unknown"
)

// Click is one ad click ID of one type, with when the click happened.
type Click struct {
	Type string    `json:"type"` // gclid | gbraid | wbraid | fbc | fbp | fbclid | ttclid | msclkid | li_fat_id
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
}

// Consent is what the subject agreed to, and when that was captured.
type Consent struct {
	AdUserData        string    `json:"ad_user_data,omitempty"`       // granted | denied | unknown
	AdPersonalization string    `json:"ad_personalization,omitempty"` // granted | denied | unknown
	CapturedAt        time.Time `json:"captured_at,omitempty"`
}

// IdentityCapture is one validated, already-hashed capture for one subject. Captures for the
// same subject merge, whatever order they arrive in ("latest" means latest CapturedAt; on
// equal times the capture written later wins):
//   - clicks accumulate: a later capture lacking a click never removes it, and the same
//     click (type and id) captured twice keeps its earliest known time;
//   - identifiers, per field (the part of the key before "/": email, phone, ...): every hash
//     of that field from the latest capture that has the field, so "email" and
//     "email/google" always come from the same capture;
//   - ip, user agent and lead id: the latest non-empty value (empty never clears);
//   - consent: the answer with the latest Consent.CapturedAt (the capture's CapturedAt when
//     zero), ignored when both answers are empty;
//   - Identity.UpdatedAt: the latest CapturedAt merged.
//
// The store keeps times to the microsecond. internal/join.Merge applies the same rules to
// captures held in memory.
type IdentityCapture struct {
	SubjectKey  string // crm.SubjectKey(source, type, id), or "email:" + hash for email subjects
	CapturedAt  time.Time
	Clicks      []Click
	Identifiers pii.Set
	IP          string
	UserAgent   string
	LeadID      string // Meta Lead Ads leadgen id
	Consent     Consent
}

// Identity is everything stored for one subject, merged across its captures.
type Identity struct {
	SubjectKey  string    `json:"subject_key"`
	Clicks      []Click   `json:"clicks,omitempty"` // every stored click, any order
	Identifiers pii.Set   `json:"identifiers,omitempty"`
	IP          string    `json:"ip,omitempty"`
	UserAgent   string    `json:"user_agent,omitempty"`
	LeadID      string    `json:"lead_id,omitempty"`
	Consent     Consent   `json:"consent"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// State is where a conversion is in its life. See DESIGN.md for the graph.
type State string

const (
	StateAwaitingIdentity State = "awaiting_identity"
	StateReady            State = "ready"
	StateInFlight         State = "in_flight"
	StateSent             State = "sent"
	StateAccepted         State = "accepted"
	StateRejected         State = "rejected"
	StateExpired          State = "expired"
	StateSkipped          State = "skipped"
	StateUnmatched        State = "unmatched"
	StateFailed           State = "failed"
	// StateHeld: the platform refused the row's conversion action (unknown, disabled, of
	// the wrong type). Claimed again, like ready, at NextAttemptAt (the hold probe); the
	// rest of the destination keeps flowing meanwhile.
	StateHeld State = "held"
	// StatePartial: sent, and the platform's request status reports that some of the
	// request's rows failed without naming which (Google Data Manager PARTIAL_SUCCESS).
	// Terminal; Detail holds "N of M failed per the platform" and the reasons. Never
	// counted as plainly accepted.
	StatePartial State = "partial"
)

// Terminal reports whether no further work is planned for a conversion in state s.
func (s State) Terminal() bool {
	switch s {
	case StateAccepted, StateRejected, StateExpired, StateSkipped, StateUnmatched, StateFailed, StatePartial:
		return true
	}
	return false
}

// Kinds of conversion rows.
const (
	KindConversion = "conversion"
	KindRetraction = "retraction" // takes back an earlier conversion (closed-lost after closed-won)
	// KindRestatement sends a new value for an earlier conversion (an upsell, a partial
	// refund): see Batch.Restatements.
	KindRestatement = "restatement"
)

// Adjustment reports whether kind takes back or restates an earlier conversion (its
// RetractsKey names that conversion).
func Adjustment(kind string) bool { return kind == KindRetraction || kind == KindRestatement }

// Reasons of skipped adjustment rows. A platform that cannot make an adjustment skips its
// row with ReasonRetractionUnsupported or ReasonRestatementUnsupported (the report counts
// them as not_supported); a platform that can waits for the conversion it adjusts to be
// accepted, and skips the adjustment when that conversion never will be.
const (
	ReasonRetractionUnsupported  = "retraction_unsupported"
	ReasonRestatementUnsupported = "restatement_unsupported"
	ReasonOriginalNotFound       = "original_not_found"    // no conversion with RetractsKey
	ReasonOriginalNotAccepted    = "original_not_accepted" // it ended rejected, expired, skipped, ...
	ReasonAwaitingOriginal       = "awaiting_original"     // ready again: it is not accepted yet
)

// NotSupported reports whether a skipped row's reason says its platform cannot make it.
func NotSupported(reason string) bool {
	return reason == ReasonRetractionUnsupported || reason == ReasonRestatementUnsupported
}

// Conversion is one row of the outbox: one conversion for one destination.
type Conversion struct {
	Key  string // crm.ConversionKey; unique; the platform dedup key
	Kind string // KindConversion | KindRetraction | KindRestatement
	// RetractsKey is set on adjustments only: the key of the conversion a retraction takes
	// back or a restatement restates (the platform's orderId / transactionId).
	RetractsKey    string
	Destination    string
	Platform       string
	Rule           string
	MappingVersion string
	Source         string
	ObjectType     string
	ObjectID       string
	SubjectKeys    []string // what the identity join looks up (object and its contacts)
	ConversionName string   // conversion action id / event name
	OccurredAt     time.Time
	Value          *float64 // nil when the rule gave no value
	Currency       string
	// Identity is the joined snapshot the upload is built from: the latest click of each type
	// before OccurredAt, hashed identifiers, consent. Empty while awaiting identity.
	Identity Identity
	State    State
	Reason   string // reason code for the current state (terminal states always carry one)
	Detail   string // human detail: the platform's message, never raw PII
	Attempts int
	// NextAttemptAt is when a ready row may next be claimed (backoff survives restarts).
	NextAttemptAt time.Time
	LeaseOwner    string
	LeaseUntil    time.Time
	PlatformRef   string // e.g. the Data Manager requestId to poll
	Replay        bool   // created by a replay (uploaded under the replay rate cap)
	CreatedAt     time.Time
	UpdatedAt     time.Time

	// Adjusted is never stored: on an adjustment being sent, the dispatcher sets it to the
	// conversion it adjusts, as stored and accepted (a platform that identifies the
	// original by click and time, or resends it, builds the body from it).
	Adjusted *Conversion
}

// Outcome is the result of one attempt on one claimed conversion. Recording it releases the
// row's lease in the same transaction.
type Outcome struct {
	Key           string
	State         State // ready (retry), sent, accepted, rejected, expired, skipped, failed
	Reason        string
	Detail        string
	NextAttemptAt time.Time // for State == StateReady
	PlatformRef   string
	CountAttempt  bool // true when a request was actually made for this row
}

// StageCount counts CRM stage changes seen per day, source and matched rule ("" = no rule
// matched), for the reconciliation report.
type StageCount struct {
	Day    time.Time // UTC midnight
	Source string
	Rule   string
	Count  int
	// Topic, Partition and Offset name the Kafka message a count written by WriteBatch came
	// from (Topic "" = none): such a count is added once per message, however often the
	// message is redelivered (see WriteBatch). Counts the store returns never carry them.
	Topic     string
	Partition int
	Offset    int64
}
