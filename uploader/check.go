package uploader

import (
	"fmt"
	"math"
	"regexp"

	"github.com/closedloop/closedloop/store"
)

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// RowRules are the row checks every platform shares; each platform's Check runs
// CheckRow first and adds its own (windows, identifiers).
type RowRules struct {
	// API names the platform's API in reasons ("the Conversions API").
	API string
	// Retracts is true when the API can take a conversion back; otherwise retraction rows
	// are skipped with reason retraction_unsupported.
	Retracts bool
	// Restates is true when the API can change a conversion's value; otherwise
	// restatement rows are skipped with reason restatement_unsupported.
	Restates bool
	// NameField is what the platform calls the conversion name ("event_name"); "" when
	// the conversion name is checked by the platform itself.
	NameField string
	// NonNegativeValue rejects a negative value.
	NonNegativeValue bool
}

// CheckRow applies the shared rules: adjustments the API cannot make and rows whose
// ad_user_data consent is denied are skipped; a row without an event time, name, or with
// an unusable value or currency is rejected.
func CheckRow(c *store.Conversion, r RowRules) *Error {
	if c.Kind == store.KindRetraction && !r.Retracts {
		return &Error{Class: ClassSkipped, Reason: store.ReasonRetractionUnsupported, Detail: r.API + " cannot retract a conversion"}
	}
	if c.Kind == store.KindRestatement && !r.Restates {
		return &Error{Class: ClassSkipped, Reason: store.ReasonRestatementUnsupported, Detail: r.API + " cannot restate a conversion's value"}
	}
	if c.Identity.Consent.AdUserData == store.ConsentDenied {
		return &Error{Class: ClassSkipped, Reason: "consent_denied", Detail: "ad_user_data consent denied"}
	}
	if c.OccurredAt.IsZero() {
		return &Error{Class: ClassPermanent, Reason: "missing_event_time", Detail: "occurred_at is not set"}
	}
	if r.NameField != "" && c.ConversionName == "" {
		return &Error{Class: ClassPermanent, Reason: "missing_event_name", Detail: "conversion name (" + r.NameField + ") is empty"}
	}
	if c.Value == nil {
		return nil
	}
	if v := *c.Value; math.IsNaN(v) || math.IsInf(v, 0) || (r.NonNegativeValue && v < 0) {
		what := "a finite number"
		if r.NonNegativeValue {
			what = "a finite, non-negative number"
		}
		return &Error{Class: ClassPermanent, Reason: "invalid_value", Detail: "value must be " + what}
	}
	if !currencyCode.MatchString(c.Currency) {
		return &Error{Class: ClassPermanent, Reason: "invalid_currency",
			Detail: fmt.Sprintf("currency must be a 3-letter ISO 4217 code, got %q", c.Currency)}
	}
	return nil
}
