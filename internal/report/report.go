// Package report builds the reconciliation report analysts read to catch silent breakage:
// per destination, conversion and day, what the CRM produced against what was uploaded,
// accepted, rejected, expired, skipped and left waiting; the match and accepted rates and
// how they moved against the previous period of the same length; and weekly volumes too
// sparse for bidding to learn from.
//
// It reads counts only (Source); it never touches a row and holds no raw identifier.
package report

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/store"
)

// Source is what the report reads from the store.
type Source interface {
	ReportCounts(ctx context.Context, since, until time.Time) ([]store.ReportCount, error)
	StageCounts(ctx context.Context, since, until time.Time) ([]store.StageCount, error)
	IdentifierCounts(ctx context.Context, since, until time.Time) ([]store.IdentifierCount, error)
}

// Options says which period to report and what to flag.
type Options struct {
	Since, Until        time.Time
	RateChangeThreshold float64 // flag a rate that moved more than this (0.10 = ten points)
	SparseWeeklyVolume  int     // flag conversions created fewer times a week than this
}

// Counts are the outcomes of the conversions created in one cell of the report.
type Counts struct {
	Matched    int            `json:"matched"` // CRM stage changes that matched the producing rules
	Created    int            `json:"created"`
	Accepted   int            `json:"accepted"`
	Sent       int            `json:"sent"` // taken by the platform, acceptance not yet reported
	Rejected   int            `json:"rejected"`
	RejectedBy map[string]int `json:"rejected_by_reason,omitempty"`
	Expired    int            `json:"expired"`
	Skipped    int            `json:"skipped"`
	// NotSupported counts, of Skipped, the adjustments (retractions, restatements) the
	// destination's platform cannot make (store.NotSupported reasons), by reason in
	// NotSupportedBy: made, kept and shown, never sent.
	NotSupported   int            `json:"not_supported"`
	NotSupportedBy map[string]int `json:"not_supported_by_reason,omitempty"`
	Unmatched      int            `json:"unmatched"`
	Awaiting       int            `json:"awaiting"` // awaiting identity
	Pending        int            `json:"pending"`  // ready or in flight, never tried or not yet failed
	InRetry        int            `json:"in_retry"` // ready again after a transient failure
	Failed         int            `json:"failed"`   // retries exhausted
	// Held counts rows whose conversion action the platform refused (unknown, disabled):
	// kept, resent at each hold probe, by reason in HeldBy.
	Held   int            `json:"held"`
	HeldBy map[string]int `json:"held_by_reason,omitempty"`
	// Partial counts rows of requests the platform reports as partly failed without naming
	// the failed rows; PartialBy keys are "N of M failed per the platform: reason=count".
	// Never counted as accepted.
	Partial   int            `json:"partial"`
	PartialBy map[string]int `json:"partial_by_request,omitempty"`
	// WithIdentifier counts created conversions that had a usable identifier.
	WithIdentifier int `json:"with_identifier"`
	// Enriching counts, of Awaiting, the conversions waiting for the CRM's API
	// (awaiting_enrichment).
	Enriching int `json:"enriching,omitempty"`
	// Identifiers counts created conversions by the kinds of identifier their upload
	// carries (one conversion may carry several): the match quality behind MatchRate.
	Identifiers IdentifierKinds `json:"identifiers"`
}

// IdentifierKinds counts conversions carrying each kind of identifier.
type IdentifierKinds struct {
	ClickID int `json:"click_id"`
	Email   int `json:"email"`
	Phone   int `json:"phone"`
	LeadID  int `json:"lead_id"`
}

// IdentifierShares are IdentifierKinds over conversions created (0 when none was).
type IdentifierShares struct {
	ClickID float64 `json:"click_id"`
	Email   float64 `json:"email"`
	Phone   float64 `json:"phone"`
	LeadID  float64 `json:"lead_id"`
}

// Shares is the share of created conversions carrying each identifier kind.
func (c Counts) Shares() IdentifierShares {
	k := c.Identifiers
	return IdentifierShares{ClickID: ratio(k.ClickID, c.Created), Email: ratio(k.Email, c.Created),
		Phone: ratio(k.Phone, c.Created), LeadID: ratio(k.LeadID, c.Created)}
}

// MatchRate is conversions with a usable identifier over conversions created.
func (c Counts) MatchRate() float64 { return ratio(c.WithIdentifier, c.Created) }

// AcceptedRate is conversions accepted over conversions created.
func (c Counts) AcceptedRate() float64 { return ratio(c.Accepted, c.Created) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (c *Counts) add(o Counts) {
	c.Matched += o.Matched
	c.Created += o.Created
	c.Accepted += o.Accepted
	c.Sent += o.Sent
	c.Rejected += o.Rejected
	for r, n := range o.RejectedBy {
		if c.RejectedBy == nil {
			c.RejectedBy = map[string]int{}
		}
		c.RejectedBy[r] += n
	}
	c.Expired += o.Expired
	c.Skipped += o.Skipped
	c.NotSupported += o.NotSupported
	c.NotSupportedBy = addBy(c.NotSupportedBy, o.NotSupportedBy)
	c.Unmatched += o.Unmatched
	c.Awaiting += o.Awaiting
	c.Enriching += o.Enriching
	c.Pending += o.Pending
	c.InRetry += o.InRetry
	c.Failed += o.Failed
	c.Held += o.Held
	c.HeldBy = addBy(c.HeldBy, o.HeldBy)
	c.Partial += o.Partial
	c.PartialBy = addBy(c.PartialBy, o.PartialBy)
	c.WithIdentifier += o.WithIdentifier
	c.Identifiers.ClickID += o.Identifiers.ClickID
	c.Identifiers.Email += o.Identifiers.Email
	c.Identifiers.Phone += o.Identifiers.Phone
	c.Identifiers.LeadID += o.Identifiers.LeadID
}

// Day is one day of one conversion on one destination.
type Day struct {
	Day time.Time `json:"day"`
	Counts
	// IdentifierShare is the day's match quality: Counts.Shares.
	IdentifierShare IdentifierShares `json:"identifier_share"`
}

// Conversion is one conversion (action or event) on one destination over the period.
type Conversion struct {
	Destination string `json:"destination"`
	Platform    string `json:"platform"`
	Conversion  string `json:"conversion"`
	Days        []Day  `json:"days"`
	Total       Counts `json:"total"`
	Previous    Counts `json:"previous"` // the period of the same length just before

	MatchRate float64 `json:"match_rate"`
	// IdentifierShare is the period's match quality (Total.Shares); PreviousIdentifierShare
	// the previous period's, so a moved match rate shows which identifier moved it.
	IdentifierShare         IdentifierShares `json:"identifier_share"`
	PreviousIdentifierShare IdentifierShares `json:"previous_identifier_share"`
	PreviousMatchRate       float64          `json:"previous_match_rate"`
	AcceptedRate            float64          `json:"accepted_rate"`
	PreviousAcceptedRate    float64          `json:"previous_accepted_rate"`
	// MatchRateFlag / AcceptedRateFlag are set when the rate moved more than the threshold.
	MatchRateFlag    bool    `json:"match_rate_flag"`
	AcceptedRateFlag bool    `json:"accepted_rate_flag"`
	WeeklyVolume     float64 `json:"weekly_volume"`
	SparseFlag       bool    `json:"sparse_flag"` // under the sparse weekly volume: optimize on an upstream stage
}

// Report is the whole reconciliation report.
type Report struct {
	Since       time.Time    `json:"since"`
	Until       time.Time    `json:"until"`
	Threshold   float64      `json:"rate_change_threshold"`
	Sparse      int          `json:"sparse_weekly_volume"`
	StageTotal  int          `json:"stage_changes"`           // every CRM stage change seen in the period
	StageNoRule int          `json:"stage_changes_unmatched"` // those no rule matched
	Conversions []Conversion `json:"conversions"`
	// CRMs is, per CRM connection, what waits for enrichment now and whether the
	// connection is paused (filled by the caller with enrich.Overview; not period-bound).
	CRMs []enrich.ConnectionOverview `json:"crm_connections,omitempty"`
}

type cellKey struct{ dest, platform, conv string }

// Build reads the period and the one before it and assembles the report.
func Build(ctx context.Context, src Source, opt Options) (Report, error) {
	if !opt.Until.After(opt.Since) {
		return Report{}, fmt.Errorf("report: until (%s) must be after since (%s)", opt.Until.Format(time.RFC3339), opt.Since.Format(time.RFC3339))
	}
	length := opt.Until.Sub(opt.Since)
	prevSince := opt.Since.Add(-length)

	cur, err := src.ReportCounts(ctx, opt.Since, opt.Until)
	if err != nil {
		return Report{}, fmt.Errorf("report: conversion counts: %w", err)
	}
	prev, err := src.ReportCounts(ctx, prevSince, opt.Since)
	if err != nil {
		return Report{}, fmt.Errorf("report: previous period: %w", err)
	}
	stages, err := src.StageCounts(ctx, opt.Since, opt.Until)
	if err != nil {
		return Report{}, fmt.Errorf("report: stage counts: %w", err)
	}
	curIDs, err := src.IdentifierCounts(ctx, opt.Since, opt.Until)
	if err != nil {
		return Report{}, fmt.Errorf("report: identifier counts: %w", err)
	}
	prevIDs, err := src.IdentifierCounts(ctx, prevSince, opt.Since)
	if err != nil {
		return Report{}, fmt.Errorf("report: previous identifier counts: %w", err)
	}

	rep := Report{Since: opt.Since, Until: opt.Until, Threshold: opt.RateChangeThreshold, Sparse: opt.SparseWeeklyVolume}
	// Stage changes matched per rule and day; a cell's matched count sums the rules that
	// produced its conversions.
	type ruleDay struct {
		rule string
		day  time.Time
	}
	matched := map[ruleDay]int{}
	for _, s := range stages {
		rep.StageTotal += s.Count
		if s.Rule == "" {
			rep.StageNoRule += s.Count
			continue
		}
		matched[ruleDay{s.Rule, dayOf(s.Day)}] += s.Count
	}

	days := map[cellKey]map[time.Time]*Counts{}
	rules := map[cellKey]map[ruleDay]bool{}
	for _, rc := range cur {
		k := cellKey{rc.Destination, rc.Platform, rc.ConversionName}
		if days[k] == nil {
			days[k] = map[time.Time]*Counts{}
			rules[k] = map[ruleDay]bool{}
		}
		d := dayOf(rc.Day)
		c := days[k][d]
		if c == nil {
			c = &Counts{}
			days[k][d] = c
		}
		tally(c, rc)
		rd := ruleDay{rc.Rule, d}
		if !rules[k][rd] {
			rules[k][rd] = true
			c.Matched += matched[rd]
		}
	}
	for _, ic := range curIDs {
		k := cellKey{ic.Destination, ic.Platform, ic.ConversionName}
		if c := days[k][dayOf(ic.Day)]; c != nil { // the same conversions ReportCounts counted
			kinds(c, ic)
		}
	}
	previous := map[cellKey]*Counts{}
	for _, rc := range prev {
		k := cellKey{rc.Destination, rc.Platform, rc.ConversionName}
		if previous[k] == nil {
			previous[k] = &Counts{}
		}
		tally(previous[k], rc)
		if days[k] == nil { // present before, silent now: exactly the breakage to show
			days[k] = map[time.Time]*Counts{}
		}
	}
	for _, ic := range prevIDs {
		if p := previous[cellKey{ic.Destination, ic.Platform, ic.ConversionName}]; p != nil {
			kinds(p, ic)
		}
	}

	weeks := length.Hours() / (24 * 7)
	for k, byDay := range days {
		conv := Conversion{Destination: k.dest, Platform: k.platform, Conversion: k.conv}
		for d, c := range byDay {
			conv.Days = append(conv.Days, Day{Day: d, Counts: *c, IdentifierShare: c.Shares()})
			conv.Total.add(*c)
		}
		sort.Slice(conv.Days, func(i, j int) bool { return conv.Days[i].Day.Before(conv.Days[j].Day) })
		if p := previous[k]; p != nil {
			conv.Previous = *p
		}
		conv.MatchRate, conv.PreviousMatchRate = conv.Total.MatchRate(), conv.Previous.MatchRate()
		conv.IdentifierShare, conv.PreviousIdentifierShare = conv.Total.Shares(), conv.Previous.Shares()
		conv.AcceptedRate, conv.PreviousAcceptedRate = conv.Total.AcceptedRate(), conv.Previous.AcceptedRate()
		if conv.Previous.Created > 0 {
			conv.MatchRateFlag = moved(conv.MatchRate, conv.PreviousMatchRate, opt.RateChangeThreshold)
			conv.AcceptedRateFlag = moved(conv.AcceptedRate, conv.PreviousAcceptedRate, opt.RateChangeThreshold)
		} else if conv.Total.Created == 0 {
			conv.MatchRateFlag, conv.AcceptedRateFlag = true, true
		}
		if weeks > 0 {
			conv.WeeklyVolume = float64(conv.Total.Created) / weeks
		}
		conv.SparseFlag = conv.WeeklyVolume < float64(opt.SparseWeeklyVolume)
		rep.Conversions = append(rep.Conversions, conv)
	}
	sort.Slice(rep.Conversions, func(i, j int) bool {
		a, b := rep.Conversions[i], rep.Conversions[j]
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Conversion < b.Conversion
	})
	return rep, nil
}

func moved(now, before, threshold float64) bool {
	d := now - before
	if d < 0 {
		d = -d
	}
	return d > threshold
}

func dayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// kinds adds one grouped identifier count to c.
func kinds(c *Counts, ic store.IdentifierCount) {
	c.Identifiers.ClickID += ic.WithClickID
	c.Identifiers.Email += ic.WithEmail
	c.Identifiers.Phone += ic.WithPhone
	c.Identifiers.LeadID += ic.WithLeadID
}

// tally adds one grouped store count to c.
func tally(c *Counts, rc store.ReportCount) {
	n := rc.Count
	c.Created += n
	if rc.WithIdentifier {
		c.WithIdentifier += n
	}
	switch rc.State {
	case store.StateAccepted:
		c.Accepted += n
	case store.StateSent:
		c.Sent += n
	case store.StateRejected:
		c.Rejected += n
		if c.RejectedBy == nil {
			c.RejectedBy = map[string]int{}
		}
		c.RejectedBy[reasonOr(rc.Reason)] += n
	case store.StateExpired:
		c.Expired += n
	case store.StateSkipped:
		c.Skipped += n
		if store.NotSupported(rc.Reason) {
			c.NotSupported += n
			c.NotSupportedBy = addBy(c.NotSupportedBy, map[string]int{rc.Reason: n})
		}
	case store.StateUnmatched:
		c.Unmatched += n
	case store.StateAwaitingIdentity:
		c.Awaiting += n
	case store.StateAwaitingEnrichment:
		// Waiting for the CRM's API (internal/enrich): counted as waiting, and apart.
		c.Awaiting += n
		c.Enriching += n
	case store.StateFailed:
		c.Failed += n
	case store.StateHeld:
		c.Held += n
		c.HeldBy = addBy(c.HeldBy, map[string]int{reasonOr(rc.Reason): n})
	case store.StatePartial:
		c.Partial += n
		c.PartialBy = addBy(c.PartialBy, map[string]int{reasonOr(rc.Reason): n})
	case store.StateReady, store.StateInFlight:
		if rc.Reason != "" {
			c.InRetry += n
		} else {
			c.Pending += n
		}
	}
}

func addBy(into, from map[string]int) map[string]int {
	for k, n := range from {
		if into == nil {
			into = map[string]int{}
		}
		into[k] += n
	}
	return into
}

func reasonOr(r string) string {
	if r == "" {
		return "unspecified"
	}
	return r
}
