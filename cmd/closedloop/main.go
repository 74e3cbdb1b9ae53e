// Command closedloop reads CRM stage changes from Kafka and uploads the conversions they mean
// to ad platforms. Run `closedloop --help` for the verbs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCmd().ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "closedloop:", err)
	var ex *exitError
	if errors.As(err, &ex) {
		os.Exit(ex.code)
	}
	os.Exit(1)
}

// exitError carries a specific exit code out of a verb (2 for usage errors).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError is a bad flag or argument: one line on stderr and exit code 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}
