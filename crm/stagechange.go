package crm

import (
	"time"

	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/internal/pii"
)

// Object types a stage change can be about.
const (
	ObjectDeal        = "deal"
	ObjectOpportunity = "opportunity"
	ObjectLead        = "lead"
	ObjectContact     = "contact"
)

// Statuses a CRM reports beside the stage. "won" is a status in Pipedrive and Salesforce
// (IsWon), not a stage, so rules can match either.
const (
	StatusOpen = "open"
	StatusWon  = "won"
	StatusLost = "lost"
)

// StageChange is the canonical form of one CRM stage change, whatever CRM it came from.
// Raw email and phone never live here: decoders hash them into Identifiers on arrival.
type StageChange struct {
	Source        string           `json:"source"`      // hubspot | salesforce | pipedrive | the relay's own name
	ObjectType    string           `json:"object_type"` // deal | opportunity | lead | contact
	ObjectID      string           `json:"object_id"`
	Pipeline      string           `json:"pipeline,omitempty"`
	Stage         string           `json:"stage"`
	PreviousStage string           `json:"previous_stage,omitempty"`
	Status        string           `json:"status,omitempty"` // open | won | lost, where the CRM has one
	OccurredAt    time.Time        `json:"occurred_at"`
	Amount        *decimal.Decimal `json:"amount,omitempty"`
	Currency      string           `json:"currency,omitempty"`
	ContactIDs    []string         `json:"contact_ids,omitempty"`
	// Identifiers holds the hashed forms of any email/phone the payload carried.
	Identifiers pii.Set           `json:"identifiers,omitempty"`
	ClickIDs    map[string]string `json:"click_ids,omitempty"` // gclid, gbraid, wbraid, fbc, fbp, fbclid, ttclid, msclkid, li_fat_id
	LeadID      string            `json:"lead_id,omitempty"`   // Meta Lead Ads leadgen id, when known
	Properties  map[string]string `json:"properties,omitempty"`
}

// SubjectKeys returns the identity subject keys this stage change can be joined on: the
// object itself, each of its contacts and the CRM lead it belongs to (properties
// crm_lead_id, as Close reports it), in the store's "source:type:id" form.
func (s StageChange) SubjectKeys() []string {
	keys := make([]string, 0, 2+len(s.ContactIDs))
	keys = append(keys, SubjectKey(s.Source, s.ObjectType, s.ObjectID))
	for _, c := range s.ContactIDs {
		keys = append(keys, SubjectKey(s.Source, ObjectContact, c))
	}
	if lead := s.Properties[PropertyCRMLeadID]; lead != "" && s.ObjectType != ObjectLead {
		keys = append(keys, SubjectKey(s.Source, ObjectLead, lead))
	}
	return keys
}

// SubjectKey is the one spelling of an identity subject shared by captures and stage changes.
func SubjectKey(source, objectType, id string) string {
	return source + ":" + objectType + ":" + id
}
