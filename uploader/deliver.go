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
// bad rows stand alone; when every row then stands alone rejected for the same reason, the
// rejection was the request's, not the rows': they are retried, never rejected. It stops
// early and returns the setup *Error (pause) or errAbandoned (shutdown); rows not done then
// are handed back by the caller. reached is set when the platform processed a request.
func (d *Dispatcher) deliver(ctx context.Context, rows []store.Conversion, outs []store.Outcome, done []bool, reached *bool) error {
	alone := make([]*Error, len(rows)) // batch rejections of single rows, settled below
	stop := d.bisect(ctx, rows, outs, done, alone, reached)
	now := d.o.Now()
	same := len(rows) > 1
	for i := range rows {
		if alone[i] == nil || alone[i].Reason != alone[0].Reason {
			same = false
			break
		}
	}
	if same {
		e := alone[0]
		d.unrecognised("every_row_rejected:"+e.Reason, e.Detail)
		d.batchRetry(rows, outs, done, &Error{Class: ClassUnknown, Reason: e.Reason,
			Detail: fmt.Sprintf("each of the %d rows was rejected alone with the same answer, so the request is at fault, not the rows: %s", len(rows), e.Detail)}, now)
		return stop
	}
	for i, e := range alone {
		if e != nil {
			outs[i], done[i] = d.outcome(&rows[i], ClassPermanent, e.Reason, e.Detail, 0, now, true), true
		}
	}
	return stop
}

// bisect is deliver's recursion: single rows of a rejected batch are noted in alone.
func (d *Dispatcher) bisect(ctx context.Context, rows []store.Conversion, outs []store.Outcome, done []bool, alone []*Error, reached *bool) error {
	results, err := d.send(ctx, rows)
	now := d.o.Now()
	if err == nil {
		*reached = true
		var setup *Error
		for i, r := range results {
			if r.Class == ClassSetup {
				// A per-row setup problem that is not scoped to the row's conversion action
				// (the platform said ClassHeld for those): keep the row and pause.
				if setup == nil {
					setup = &Error{Class: ClassSetup, Reason: r.Reason, Detail: r.Detail}
				}
				continue
			}
			outs[i], done[i] = d.outcome(&rows[i], r.Class, r.Reason, r.Detail, r.RetryAfter, now, true), true
			outs[i].PlatformRef = r.PlatformRef
			if r.Class == ClassAccepted || r.Class == ClassSent {
				d.clearHeld(rows[i].ConversionName)
			}
		}
		if setup != nil {
			return setup
		}
		return nil
	}
	if errors.Is(err, errAbandoned) {
		return err
	}
	e := AsError(err)
	switch e.Class {
	case ClassBatchRejected, ClassPermanent:
		*reached = true
		if len(rows) == 1 {
			alone[0] = e
			return nil
		}
		mid := len(rows) / 2
		if err := d.bisect(ctx, rows[:mid], outs[:mid], done[:mid], alone[:mid], reached); err != nil {
			return err
		}
		return d.bisect(ctx, rows[mid:], outs[mid:], done[mid:], alone[mid:], reached)
	case ClassSetup:
		return e
	case ClassHeld, ClassExpired, ClassSkipped:
		*reached = true
		for i := range rows {
			outs[i], done[i] = d.outcome(&rows[i], e.Class, e.Reason, e.Detail, e.RetryAfter, now, true), true
		}
		return nil
	default: // transient, unknown, anything else: the batch failed together, it retries together
		if e.Class != ClassTransient {
			d.unrecognised(e.Reason, e.Detail)
		}
		d.batchRetry(rows, outs, done, e, now)
		return nil
	}
}

// batchRetry schedules every row of a batch that failed together for one common retry, so
// the batch is sent together again: one wait (e.RetryAfter, else the backoff of the batch's
// highest attempt count), one reason.
func (d *Dispatcher) batchRetry(rows []store.Conversion, outs []store.Outcome, done []bool, e *Error, now time.Time) {
	wait := e.RetryAfter
	if wait <= 0 {
		most := 0
		for i := range rows {
			most = max(most, rows[i].Attempts)
		}
		wait = d.rowBackoff(most + 1)
	}
	for i := range rows {
		outs[i], done[i] = d.retryOutcome(&rows[i], e.Reason, e.Detail, wait, now, true), true
	}
}

// unrecognised counts an answer the platform package did not recognise and logs it at warn
// level, once per reason per dispatcher.
func (d *Dispatcher) unrecognised(reason, detail string) {
	d.m.Unrecognised.WithLabelValues(d.name, reason).Inc()
	d.mu.Lock()
	seen := d.warned[reason]
	if d.warned == nil {
		d.warned = map[string]bool{}
	}
	d.warned[reason] = true
	d.mu.Unlock()
	if !seen {
		d.log.Warn("the platform gave an answer this uploader does not recognise; the rows are kept and retried "+
			"with backoff (they end failed, re-drivable, after max_attempts), never rejected",
			zap.String("reason", reason), zap.String("detail", redact(detail)))
	}
}

// send makes one logical request (in-process retries included) for rows and classifies the
// answer: per-row results, or an *Error for the whole batch, or errAbandoned. A request the
// platform refused because a cached credential had expired is resent once, at once, with a
// fresh one.
func (d *Dispatcher) send(ctx context.Context, rows []store.Conversion) ([]RowResult, error) {
	results, err := d.sendOnce(ctx, rows)
	var e *Error
	if errors.As(err, &e) && e.Refreshed {
		d.log.Info("the platform refused an expired credential; resending with a fresh one", zap.String("reason", e.Reason))
		results, err = d.sendOnce(ctx, rows)
	}
	return results, err
}

func (d *Dispatcher) sendOnce(ctx context.Context, rows []store.Conversion) ([]RowResult, error) {
	req, err := d.p.BuildRequest(ctx, rows, d.o.Now())
	if err != nil {
		var e *Error
		switch {
		case errors.As(err, &e):
			// Credentials could not be had (setup), or not for now (transient).
			d.m.Requests.WithLabelValues(d.name, string(e.Class)).Inc()
			return nil, e
		case ctx.Err() != nil:
			return nil, errAbandoned
		}
		// The platform cannot encode this batch although every row passed Check: treat it
		// like a batch rejection so bisecting isolates the row that breaks it.
		return nil, &Error{Class: ClassBatchRejected, Reason: "build_request_failed", Detail: errText(err)}
	}
	classify := func(resp *http.Response, body []byte) error {
		_, perr := d.p.ParseResponse(resp, body, rows)
		return perr
	}
	resp, body, err := d.do(ctx, req, len(rows), classify)
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
// with its body read (and closed). Network failures become a transient *Error. classify,
// when set, is shown every response the HTTP client would retry (429, 5xx) before it
// retries: an answer it classifies as anything but transient is not retried in process.
func (d *Dispatcher) do(ctx context.Context, req *http.Request, rows int, classify func(*http.Response, []byte) error) (*http.Response, []byte, error) {
	if err := d.lim.Wait(ctx); err != nil {
		return nil, nil, errAbandoned
	}
	if classify != nil {
		req = req.WithContext(withPeek(req.Context(), classify))
	}
	rreq, err := retryablehttp.FromRequest(req)
	if err != nil {
		return nil, nil, &Error{Class: ClassTransient, Reason: "request_body", Detail: errText(err)}
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
		return nil, nil, &Error{Class: ClassTransient, Reason: "network_error", Detail: errText(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, errAbandoned
		}
		d.m.Requests.WithLabelValues(d.name, "error").Inc()
		return nil, nil, &Error{Class: ClassTransient, Reason: "read_response", Detail: errText(err)}
	}
	return resp, body, nil
}

// classify enforces the contract on ParseResponse's answer: a result count that does not
// match the batch is unknown (and logged), any error that is not an *Error is unknown, and
// a Retry-After header (seconds or HTTP date) fills waits the platform left at zero.
// Credentials are the platform's to judge: a 401 its token refresh fixes comes back
// Refreshed, one it cannot fix as setup.
func (d *Dispatcher) classify(resp *http.Response, results []RowResult, err error, n int) error {
	ra, hasRA := RetryAfter(resp.Header, d.o.Now())
	if err == nil {
		if len(results) != n {
			d.log.Error("platform returned a result count that does not match the batch; retrying the batch",
				zap.Int("rows", n), zap.Int("results", len(results)), zap.Int("status", resp.StatusCode))
			return &Error{Class: ClassUnknown, Reason: "result_count_mismatch", Detail: fmt.Sprintf("%d results for %d rows", len(results), n), RetryAfter: ra}
		}
		if hasRA {
			for i := range results {
				if (results[i].Class == ClassTransient || results[i].Class == ClassUnknown) && results[i].RetryAfter <= 0 {
					results[i].RetryAfter = ra
				}
			}
		}
		return nil
	}
	e := AsError(err)
	if e.RetryAfter <= 0 && hasRA && (e.Class == ClassTransient || e.Class == ClassUnknown) {
		cp := *e
		cp.RetryAfter = ra
		return &cp
	}
	return e
}

func requestOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	return string(AsError(err).Class)
}

// outcome is the one place a class becomes a row state. counted says a request was made
// for the row (its attempt counts).
//
//	accepted → accepted            sent → sent (polled)        partial → partial
//	permanent, batch_rejected → rejected                        expired, skipped → same
//	transient → ready after backoff (failed after max_attempts)
//	unknown → as transient, counted and warned once per reason
//	held → held until the hold probe (PauseMax), attempts not counted
//	setup → handed back unchanged (the caller pauses the destination)
func (d *Dispatcher) outcome(c *store.Conversion, class Class, reason, detail string, after time.Duration, now time.Time, counted bool) store.Outcome {
	var o store.Outcome
	switch class {
	case ClassAccepted:
		o = d.final(c, store.StateAccepted, class, reason, detail)
	case ClassSent:
		o = d.final(c, store.StateSent, class, reason, detail)
	case ClassPartial:
		o = d.final(c, store.StatePartial, class, reason, detail)
	case ClassPermanent, ClassBatchRejected:
		o = d.final(c, store.StateRejected, ClassPermanent, reason, detail)
	case ClassExpired:
		o = d.final(c, store.StateExpired, class, reason, detail)
	case ClassSkipped:
		o = d.final(c, store.StateSkipped, class, reason, detail)
	case ClassTransient:
		return d.retryOutcome(c, reason, detail, after, now, counted)
	case ClassHeld:
		return d.hold(c, reason, detail, after, now)
	case ClassSetup:
		d.m.Rows.WithLabelValues(d.name, "handed_back").Inc()
		return handBack(c, now)
	default: // ClassUnknown and anything a platform package made up
		if class != ClassUnknown {
			reason, detail = "unknown_class_"+string(class), reason+": "+detail
		}
		d.unrecognised(reason, detail)
		return d.retryOutcome(c, reason, detail, after, now, counted)
	}
	o.CountAttempt = counted
	return o
}

// hold parks a row whose conversion action the platform does not take (unknown, disabled,
// wrong type) until the hold probe: the rest of the destination keeps flowing, and the row
// goes out again once the mapping or the platform is fixed. Holding never counts an attempt,
// so a held row never ends failed for it.
func (d *Dispatcher) hold(c *store.Conversion, reason, detail string, after time.Duration, now time.Time) store.Outcome {
	wait := after
	if wait <= 0 {
		wait = d.o.PauseMax
	}
	d.m.Rows.WithLabelValues(d.name, string(ClassHeld)).Inc()
	d.noteHeld(c.ConversionName, reason, detail)
	return store.Outcome{Key: c.Key, State: store.StateHeld, Reason: reason, Detail: detail, NextAttemptAt: now.Add(wait)}
}

// checkOutcome turns a Check refusal into its outcome (no request was made). A setup
// class hands the row back and asks for a pause.
func (d *Dispatcher) checkOutcome(c *store.Conversion, re *Error, now time.Time) (store.Outcome, *Error) {
	if re.Class == ClassSetup {
		return d.outcome(c, re.Class, re.Reason, re.Detail, 0, now, false), re
	}
	return d.outcome(c, re.Class, re.Reason, re.Detail, re.RetryAfter, now, false), nil
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
