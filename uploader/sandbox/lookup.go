package sandbox

import "slices"

// LookupFaults shape what the emulated read-only lookups answer (`closedloop destinations
// test` and conversion actions by name): the conversion action, account and dataset reads
// and the destinations a platform validates on ingest. Each platform's emulation says which
// it answers.
//
// Without any, every numeric conversion action id exists, is ENABLED, of type UPLOAD_CLICKS
// and owned by the account asked about (as the upload endpoints assume), and every numeric
// dataset and event set exists. A name is only found among ConversionActions.
type LookupFaults struct {
	// ConversionActions are answered as listed (ambiguous names: list two with one name and
	// different owners). Owner defaults to the customer asked about, Status to ENABLED, Type
	// to UPLOAD_CLICKS.
	ConversionActions []ConversionAction `json:"conversion_actions,omitempty"`
	// UnknownActions are conversion action ids that do not exist (nor does the reject marker).
	UnknownActions []string `json:"unknown_actions,omitempty"`
	// UnknownCustomers are account (customer) ids the credentials cannot access.
	UnknownCustomers []string `json:"unknown_customers,omitempty"`
	// UnknownDatasets are dataset and event set ids that do not exist.
	UnknownDatasets []string `json:"unknown_datasets,omitempty"`
}

// ConversionAction is one emulated conversion action of an account.
type ConversionAction struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status,omitempty"`         // ENABLED | REMOVED | HIDDEN
	Type   string `json:"type,omitempty"`           // UPLOAD_CLICKS | WEBPAGE | UPLOAD_CALLS | ...
	Owner  string `json:"owner_customer,omitempty"` // owning account (customer) id
}

// UnknownDataset says dataset (or event set) id does not exist.
func (l LookupFaults) UnknownDataset(id string) bool { return slices.Contains(l.UnknownDatasets, id) }
