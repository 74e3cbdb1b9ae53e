package uploader

import (
	"errors"
	"time"
)

// Class is the kind of outcome a row or a request had. Classify maps each to a row state;
// no other place does.
type Class string

const (
	ClassAccepted  Class = "accepted"  // the platform took it (synchronously)
	ClassSent      Class = "sent"      // taken for asynchronous processing; poll PlatformRef
	ClassPartial   Class = "partial"   // async: the request's status counts failed rows without naming them
	ClassPermanent Class = "permanent" // a documented per-row validation error: rejected, never retried
	ClassTransient Class = "transient" // retry with backoff
	ClassUnknown   Class = "unknown"   // an answer the platform package does not recognise: retried, counted, warned
	ClassSetup     Class = "setup"     // credentials, account, quota: pause the destination, keep the rows
	ClassHeld      Class = "held"      // setup scoped to the row's conversion action: hold those rows, others flow
	ClassExpired   Class = "expired"   // outside the platform's window: never sent
	ClassSkipped   Class = "skipped"   // consent or policy: never sent
	// ClassBatchRejected is request-level only: the platform rejected the batch for a row it
	// did not name. The dispatcher bisects.
	ClassBatchRejected Class = "batch_rejected"
)

// Error is the one error type of the uploader: a platform's answer (for a whole request, or
// a row's Check), classified. Platform packages return it from Check, BuildRequest,
// ParseResponse and ParsePoll; any other error type is treated as ClassUnknown.
type Error struct {
	Class      Class
	Reason     string        // reason code: the platform's error code/enum, or ours
	Detail     string        // the platform's message; never raw PII or a secret
	RetryAfter time.Duration // for ClassTransient/ClassUnknown/ClassHeld: the earliest sensible retry (0 = backoff)
	// Refreshed is set on a ClassTransient credential refusal after the platform dropped a
	// cached credential: the request may be resent at once with a fresh one.
	Refreshed bool
}

func (e *Error) Error() string { return string(e.Class) + ": " + e.Reason + ": " + e.Detail }

// AsError returns err as an *Error: itself when it is one, else ClassUnknown.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Class: ClassUnknown, Reason: "unclassified", Detail: errText(err)}
}

// RowResult is the outcome of one row of an answered request.
type RowResult struct {
	Class       Class
	Reason      string        // reason code: the platform's error code/enum, or ours
	Detail      string        // the platform's message; never raw PII
	RetryAfter  time.Duration // for ClassTransient: the earliest sensible retry (0 = backoff)
	PlatformRef string        // for ClassSent
}
