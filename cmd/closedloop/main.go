// Command closedloop reads CRM stage changes from Kafka and uploads the conversions they mean
// to ad platforms. Run `closedloop --help` for the verbs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	tuneGC(os.LookupEnv)
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

// The garbage collector's default for every verb, unless the environment sets GOGC (Go's
// own variable, which then wins as usual). The live heap is small (30-40 MiB: a few
// batches in flight) while decoding, hashing and encoding allocate fast, so Go's default
// GOGC=100 collects very often. 200 costs ~10% less CPU per message for a peak RSS of
// ~120-130 MiB instead of ~80-90 (make bench). GOGC=400 took the peak RSS to 200 MiB.
//
// A catch-up with both topics backlogged keeps both pipelines' batches in flight at once:
// the live heap stays ~35 MiB, but its peaks let GOGC=200 grow the heap to a peak RSS of
// 170-190 MiB. The soft limit (GOMEMLIMIT, Go's own variable, which wins when set) makes
// the collector run earlier only while the heap nears it: 131 MiB peak at the same rates.
// A 100 MiB limit halved the upload rate (the collector ran ever more often near it);
// 120 MiB leaves the live heap of every bench case three times its size.
const (
	defaultGOGC        = 200
	defaultMemoryLimit = 120 << 20
)

func tuneGC(env func(string) (string, bool)) {
	if _, ok := env("GOGC"); !ok {
		debug.SetGCPercent(defaultGOGC)
	}
	if _, ok := env("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
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
