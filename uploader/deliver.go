package uploader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/store"
)

// errAbandoned means the context ended before the platform answered.
var errAbandoned = errors.New("request abandoned: context cancelled")

// deliver sends rows and fills outs/done (aligned with rows) for every row that got an
// answer. A batch rejected without naming rows is split in halves, each resent, until the
// bad rows stand alone. It stops early and returns the *SetupError (pause) or errAbandoned
// (shutdown); rows not done then are handed back by the caller. reached is set when the
// platform processed a request (per-row results or a batch rejection).
func (d *Dispatcher) deliver(ctx context.Context, rows []store.Conversion, outs []store.Outcome, done []bool, reached *bool) error {
	results, err := d.send(ctx, rows)
	now := d.o.Now()
	if err == nil {
		*reached = true
		var setup *SetupError
		for i, r := range results {
			if r.Class == ClassSetup {
				// A per-row setup problem (e.g. an unknown conversion action) still means
				// someone must fix the destination: keep the row and pause.
				if setup == nil {
					setup = &SetupError{Reason: r.Reason, Detail: r.Detail}
				}
				continue
			}
			outs[i], done[i] = d.resultOutcome(&rows[i], r, now), true
		}
		if setup != nil {
			return setup
		}
		return nil
	}
	var (
		te *TransientError
		br *BatchRejectedError
	)
	switch {
	case errors.As(err, &te):
		for i := range rows {
			outs[i], done[i] = d.retryOutcome(&rows[i], te.Reason, te.Detail, te.RetryAfter, now, true), true
		}
		return nil
	case errors.As(err, &br):
		*reached = true
		if len(rows) == 1 {
			outs[0], done[0] = d.final(&rows[0], store.StateRejected, ClassPermanent, br.Reason, br.Detail), true
			return nil
		}
		mid := len(rows) / 2
		if err := d.deliver(ctx, rows[:mid], outs[:mid], done[:mid], reached); err != nil {
			return err
		}
		return d.deliver(ctx, rows[mid:], outs[mid:], done[mid:], reached)
	default:
		return err
	}
}

// send makes one logical request (in-process retries included) for rows and classifies the
// answer: per-row results, or a *SetupError, *TransientError or *BatchRejectedError for the
// whole batch, or errAbandoned.
func (d *Dispatcher) send(ctx context.Context, rows []store.Conversion) ([]RowResult, error) {
	req, err := d.p.BuildRequest(ctx, rows, d.o.Now())
	if err != nil {
		var (
			se *SetupError
			te *TransientError
		)
		switch {
		case errors.As(err, &se):
			d.m.Requests.WithLabelValues(d.name, "setup").Inc()
			return nil, se
		case errors.As(err, &te):
			// Credentials could not be fetched for now (token endpoint down or
			// unreachable): the rows are fine, try them again later.
			d.m.Requests.WithLabelValues(d.name, "transient").Inc()
			return nil, te
		case ctx.Err() != nil:
			return nil, errAbandoned
		}
		// The platform cannot encode this batch although every row passed Check: treat it
		// like a batch rejection so bisecting isolates the row that breaks it.
		return nil, &BatchRejectedError{Reason: "build_request_failed", Detail: errText(err)}
	}
	resp, body, err := d.do(ctx, req, len(rows))
	if err != nil {
		return nil, err
	}
	results, perr := d.p.ParseResponse(resp, body, rows)
	perr = d.classify(resp, results, perr, len(rows))
	d.m.Requests.WithLabelValues(d.name, requestOutcome(perr)).Inc()
	if perr != nil {
		return nil, perr
	}
	return results, nil
}

// do waits on the rate limiter and sends req with retries; it returns the final response
// with its body read (and closed). Network failures become a *TransientError.
func (d *Dispatcher) do(ctx context.Context, req *http.Request, rows int) (*http.Response, []byte, error) {
	if err := d.lim.Wait(ctx); err != nil {
		return nil, nil, errAbandoned
	}
	rreq, err := retryablehttp.FromRequest(req)
	if err != nil {
		return nil, nil, &TransientError{Reason: "request_body", Detail: errText(err)}
	}
	start := time.Now()
	resp, err := d.client.Do(rreq)
	defer func() {
		if rows > 0 { // uploads only, not status polls
			d.m.Duration.WithLabelValues(d.name).Observe(time.Since(start).Seconds())
			d.m.BatchSize.WithLabelValues(d.name).Observe(float64(rows))
		}
	}()
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
		}
		if ctx.Err() != nil {
			return nil, nil, errAbandoned
		}
		d.m.Requests.WithLabelValues(d.name, "error").Inc()
		return nil, nil, &TransientError{Reason: "network_error", Detail: errText(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, errAbandoned
		}
		d.m.Requests.WithLabelValues(d.name, "error").Inc()
		return nil, nil, &TransientError{Reason: "read_response", Detail: errText(err)}
	}
	return resp, body, nil
}

// classify enforces the contract on ParseResponse's answer: 401/403 is always a setup
// problem, a result count that does not match the batch is transient (and logged), any
// other error type is transient, and a Retry-After header fills transient waits the
// platform left at zero.
func (d *Dispatcher) classify(resp *http.Response, results []RowResult, err error, n int) error {
	var (
		se *SetupError
		te *TransientError
		br *BatchRejectedError
	)
	if (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && !errors.As(err, &se) {
		return &SetupError{Reason: fmt.Sprintf("http_%d", resp.StatusCode), Detail: "the platform refused the credentials"}
	}
	ra, hasRA := retryAfter(resp)
	switch {
	case err == nil:
		if len(results) != n {
			d.log.Error("platform returned a result count that does not match the batch; retrying the batch",
				zap.Int("rows", n), zap.Int("results", len(results)), zap.Int("status", resp.StatusCode))
			return &TransientError{Reason: "result_count_mismatch", Detail: fmt.Sprintf("%d results for %d rows", len(results), n), RetryAfter: ra}
		}
		if hasRA {
			for i := range results {
				if results[i].Class == ClassTransient && results[i].RetryAfter <= 0 {
					results[i].RetryAfter = ra
				}
			}
		}
		return nil
	case errors.As(err, &se), errors.As(err, &br):
		return err
	case errors.As(err, &te):
		if te.RetryAfter <= 0 && hasRA {
			cp := *te
			cp.RetryAfter = ra
			return &cp
		}
		return err
	default:
		d.log.Warn("platform returned an unclassified error; treating it as transient",
			zap.Int("status", resp.StatusCode), zap.String("error", errText(err)))
		return &TransientError{Reason: "unclassified", Detail: errText(err), RetryAfter: ra}
	}
}

func requestOutcome(err error) string {
	var (
		se *SetupError
		te *TransientError
		br *BatchRejectedError
	)
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se):
		return "setup"
	case errors.As(err, &br):
		return "batch_rejected"
	case errors.As(err, &te):
		return "transient"
	}
	return "error"
}

// resultOutcome turns the platform's answer for one row into its outcome.
func (d *Dispatcher) resultOutcome(c *store.Conversion, r RowResult, now time.Time) store.Outcome {
	switch r.Class {
	case ClassAccepted:
		return d.final(c, store.StateAccepted, r.Class, r.Reason, r.Detail)
	case ClassSent:
		o := d.final(c, store.StateSent, r.Class, r.Reason, r.Detail)
		o.PlatformRef = r.PlatformRef
		return o
	case ClassPermanent:
		return d.final(c, store.StateRejected, r.Class, r.Reason, r.Detail)
	case ClassExpired:
		return d.final(c, store.StateExpired, r.Class, r.Reason, r.Detail)
	case ClassSkipped:
		return d.final(c, store.StateSkipped, r.Class, r.Reason, r.Detail)
	case ClassTransient:
		return d.retryOutcome(c, r.Reason, r.Detail, r.RetryAfter, now, true)
	}
	d.log.Error("platform returned an unknown row class; retrying the row", zap.String("class", string(r.Class)))
	return d.retryOutcome(c, "unknown_result_class", string(r.Class), 0, now, true)
}

// checkOutcome turns a Check rejection into its outcome (no request was made). A setup
// class hands the row back and asks for a pause.
func (d *Dispatcher) checkOutcome(c *store.Conversion, re *RowError, now time.Time) (store.Outcome, *SetupError) {
	var o store.Outcome
	switch re.Class {
	case ClassExpired:
		o = d.final(c, store.StateExpired, re.Class, re.Reason, re.Detail)
	case ClassSkipped:
		o = d.final(c, store.StateSkipped, re.Class, re.Reason, re.Detail)
	case ClassPermanent:
		o = d.final(c, store.StateRejected, re.Class, re.Reason, re.Detail)
	case ClassTransient:
		return d.retryOutcome(c, re.Reason, re.Detail, re.RetryAfter, now, false), nil
	case ClassSetup:
		d.m.Rows.WithLabelValues(d.name, "handed_back").Inc()
		return handBack(c, now), &SetupError{Reason: re.Reason, Detail: re.Detail}
	default:
		d.log.Error("platform check returned an invalid class; rejecting the row", zap.String("class", string(re.Class)))
		o = d.final(c, store.StateRejected, ClassPermanent, "invalid_check_class", string(re.Class))
	}
	o.CountAttempt = false
	return o, nil
}

// final is a terminal (or sent) outcome; terminal states always carry a reason.
func (d *Dispatcher) final(c *store.Conversion, state store.State, class Class, reason, detail string) store.Outcome {
	if reason == "" {
		reason = string(class)
	}
	d.m.Rows.WithLabelValues(d.name, string(class)).Inc()
	return store.Outcome{Key: c.Key, State: state, Reason: reason, Detail: detail, CountAttempt: true}
}

// retryOutcome schedules another attempt: after retryAfter when given, else after the
// jittered exponential backoff of the row's attempt count. counted says a request was made
// (the attempt counts); once the count reaches MaxAttempts the row ends failed.
func (d *Dispatcher) retryOutcome(c *store.Conversion, reason, detail string, after time.Duration, now time.Time, counted bool) store.Outcome {
	attempts := c.Attempts
	if counted {
		attempts++
	}
	if reason == "" {
		reason = string(ClassTransient)
	}
	if counted && attempts >= d.cfg.MaxAttempts {
		d.m.Rows.WithLabelValues(d.name, "failed").Inc()
		return store.Outcome{
			Key: c.Key, State: store.StateFailed, Reason: reason, CountAttempt: true,
			Detail: fmt.Sprintf("gave up after %d attempts: %s", attempts, detail),
		}
	}
	wait := after
	if wait <= 0 {
		wait = d.rowBackoff(attempts)
	}
	d.m.Rows.WithLabelValues(d.name, string(ClassTransient)).Inc()
	return store.Outcome{
		Key: c.Key, State: store.StateReady, Reason: reason, Detail: detail,
		NextAttemptAt: now.Add(wait), CountAttempt: counted,
	}
}

// rowBackoff is the persisted wait after attempt n (1-based): jitter in [b/2, b] with
// b = BackoffBase·2^(n-1) capped at BackoffMax.
func (d *Dispatcher) rowBackoff(n int) time.Duration {
	return jitter(expBackoff(d.o.BackoffBase, d.o.BackoffMax, max(n, 1)-1))
}

// handBack returns a row to ready as it was: no attempt counted, reason and schedule kept.
func handBack(c *store.Conversion, now time.Time) store.Outcome {
	next := c.NextAttemptAt
	if next.IsZero() {
		next = now
	}
	return store.Outcome{Key: c.Key, State: store.StateReady, Reason: c.Reason, Detail: c.Detail, NextAttemptAt: next}
}
