package enrich

import (
	"context"
	"strconv"
	"time"

	"github.com/closedloop/closedloop/store"
)

// ConnectionOverview is what the report and the status page show of one CRM connection:
// the rows waiting for it (conversions awaiting enrichment and thin stage changes waiting
// to be planned), since when the oldest waits, and whether it is paused, why and since
// when. A source with waiting rows but no configured connection is listed with an empty
// Name (its rows wait until one is configured).
type ConnectionOverview struct {
	Name        string         `json:"connection"`
	Kind        string         `json:"kind,omitempty"`
	Source      string         `json:"source"`
	Conversions int            `json:"awaiting_conversions"`
	Pending     int            `json:"awaiting_stage_changes"`
	Oldest      *time.Time     `json:"oldest_since,omitempty"`
	OldestAge   string         `json:"oldest_age,omitempty"`
	Reasons     map[string]int `json:"reasons,omitempty"`
	Paused      bool           `json:"paused"`
	PauseReason string         `json:"pause_reason,omitempty"`
	PauseDetail string         `json:"pause_detail,omitempty"`
	PausedSince *time.Time     `json:"paused_since,omitempty"`
	PausedUntil *time.Time     `json:"paused_until,omitempty"`
}

// Waiting is how many rows wait for the connection.
func (o ConnectionOverview) Waiting() int { return o.Conversions + o.Pending }

// OverviewSource is what Overview reads from the store.
type OverviewSource interface {
	AwaitingEnrichmentSummary(ctx context.Context) ([]store.AwaitingEnrichment, error)
	ConnectionStates(ctx context.Context) ([]store.ConnectionState, error)
}

// Overview lists every configured connection (sorted by name) and then any source with
// waiting rows that none enriches.
func Overview(ctx context.Context, src OverviewSource, cfg Config, now time.Time) ([]ConnectionOverview, error) {
	waiting, err := src.AwaitingEnrichmentSummary(ctx)
	if err != nil {
		return nil, err
	}
	states, err := src.ConnectionStates(ctx)
	if err != nil {
		return nil, err
	}
	bySource := map[string]store.AwaitingEnrichment{}
	for _, w := range waiting {
		bySource[w.Source] = w
	}
	byName := map[string]store.ConnectionState{}
	for _, s := range states {
		byName[s.Name] = s
	}
	var out []ConnectionOverview
	fill := func(o *ConnectionOverview, w store.AwaitingEnrichment) {
		o.Conversions, o.Pending, o.Reasons = w.Conversions, w.Pending, w.Reasons
		if !w.Oldest.IsZero() {
			t := w.Oldest.UTC()
			o.Oldest = &t
			o.OldestAge = age(now.Sub(t))
		}
	}
	for _, name := range cfg.Names() {
		c := cfg.Connections[name].WithDefaults()
		o := ConnectionOverview{Name: name, Kind: c.Kind, Source: c.Source}
		if w, ok := bySource[c.Source]; ok {
			fill(&o, w)
			delete(bySource, c.Source)
		}
		if s, ok := byName[name]; ok && s.Paused(now) {
			since, until := s.UpdatedAt.UTC(), s.PausedUntil.UTC()
			o.Paused, o.PauseReason, o.PauseDetail, o.PausedSince, o.PausedUntil = true, s.Reason, s.Detail, &since, &until
		}
		out = append(out, o)
	}
	for _, w := range waiting {
		if _, left := bySource[w.Source]; left {
			o := ConnectionOverview{Source: w.Source}
			fill(&o, w)
			out = append(out, o)
		}
	}
	return out, nil
}

// age renders a wait as "3d 4h", "2h 5m", "40s".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d >= 24*time.Hour:
		return itoa(int(d/(24*time.Hour))) + "d " + itoa(int(d%(24*time.Hour)/time.Hour)) + "h"
	case d >= time.Hour:
		return itoa(int(d/time.Hour)) + "h " + itoa(int(d%time.Hour/time.Minute)) + "m"
	case d >= time.Minute:
		return itoa(int(d/time.Minute)) + "m " + itoa(int(d%time.Minute/time.Second)) + "s"
	}
	return itoa(int(d/time.Second)) + "s"
}

func itoa(n int) string { return strconv.Itoa(n) }
