package store

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned by Get when no conversion has the key.
var ErrNotFound = errors.New("store: not found")

// InvalidError reports a row the store refuses to write, naming the field and what is
// wrong with it. It never carries a value that could be raw PII.
type InvalidError struct {
	Field  string // e.g. "conversions[3].state"
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("store: %s: %s", e.Field, e.Reason) }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
