package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/closedloop/closedloop/internal/enrich"
)

// Formats the report renders to.
var Formats = []string{"table", "json", "csv"}

// Render writes r in format: "table" (80 columns), "json" or "csv".
func Render(w io.Writer, r Report, format string) error {
	switch format {
	case "table":
		return renderTable(w, r)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "csv":
		return renderCSV(w, r)
	}
	return fmt.Errorf("unknown format %q (want table, json or csv)", format)
}

var tableHeads = []string{"match", "made", "accpt", "sent", "rejct", "expir", "skip", "unmat", "await", "queue", "retry", "fail"}

func row(c Counts) []int {
	return []int{c.Matched, c.Created, c.Accepted, c.Sent, c.Rejected, c.Expired, c.Skipped, c.Unmatched, c.Awaiting, c.Pending, c.InRetry, c.Failed}
}

func renderTable(w io.Writer, r Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Reconciliation %s .. %s (%s, UTC)\n", r.Since.UTC().Format("2006-01-02 15:04"), r.Until.UTC().Format("2006-01-02 15:04"), FormatPeriod(r.Until.Sub(r.Since)))
	fmt.Fprintf(&b, "CRM stage changes: %d seen, %d matched no rule\n", r.StageTotal, r.StageNoRule)
	if len(r.Conversions) == 0 {
		b.WriteString("\nNo conversions in this period or the one before.\n")
	}
	for _, c := range r.Conversions {
		fmt.Fprintf(&b, "\n%s (%s) · %s\n", c.Destination, c.Platform, c.Conversion)
		fmt.Fprintf(&b, "%-6s", "day")
		for _, h := range tableHeads {
			fmt.Fprintf(&b, "%6s", h)
		}
		b.WriteByte('\n')
		for _, d := range c.Days {
			writeRow(&b, d.Day.Format("01-02"), d.Counts)
		}
		writeRow(&b, "total", c.Total)
		fmt.Fprintf(&b, "match rate    %s\n", rateLine(c.MatchRate, c.PreviousMatchRate, c.Previous.Created, c.MatchRateFlag))
		fmt.Fprintf(&b, "accepted rate %s\n", rateLine(c.AcceptedRate, c.PreviousAcceptedRate, c.Previous.Created, c.AcceptedRateFlag))
		fmt.Fprintf(&b, "%-6s%7s%7s%7s%7s   share of made carrying each identifier\n", "ids", "click", "email", "phone", "lead")
		for _, d := range c.Days {
			writeShares(&b, d.Day.Format("01-02"), d.IdentifierShare)
		}
		writeShares(&b, "total", c.IdentifierShare)
		if c.Previous.Created > 0 {
			writeShares(&b, "prev", c.PreviousIdentifierShare)
		}
		fmt.Fprintf(&b, "weekly volume %.0f", c.WeeklyVolume)
		if c.SparseFlag {
			fmt.Fprintf(&b, "  ! under %d/week: optimize on an upstream stage", r.Sparse)
		}
		b.WriteByte('\n')
		if len(c.Total.RejectedBy) > 0 {
			b.WriteString("rejected by   ")
			b.WriteString(reasons(c.Total.RejectedBy))
			b.WriteByte('\n')
		}
		if c.Total.Held > 0 {
			fmt.Fprintf(&b, "! held        %d rows: the platform refused the conversion action (%s); resent at each probe\n", c.Total.Held, reasons(c.Total.HeldBy))
		}
		if c.Total.NotSupported > 0 {
			fmt.Fprintf(&b, "not supported %d adjustments the platform cannot make, kept skipped: %s\n", c.Total.NotSupported, reasons(c.Total.NotSupportedBy))
		}
		if c.Total.Partial > 0 {
			fmt.Fprintf(&b, "! partial     %d rows in requests the platform reports partly failed: %s\n", c.Total.Partial, reasons(c.Total.PartialBy))
		}
	}
	writeCRMs(&b, r.CRMs)
	b.WriteString("\nmatch = stage changes matched; made = conversions created; queue = waiting\nto upload; retry = waiting after a transient error; ! = needs a look\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeShares(b *strings.Builder, label string, s IdentifierShares) {
	fmt.Fprintf(b, "%-6s", label)
	for _, x := range []float64{s.ClickID, s.Email, s.Phone, s.LeadID} {
		fmt.Fprintf(b, "%6.0f%%", x*100)
	}
	b.WriteByte('\n')
}

func writeRow(b *strings.Builder, label string, c Counts) {
	fmt.Fprintf(b, "%-6s", label)
	for _, n := range row(c) {
		fmt.Fprintf(b, "%6d", n)
	}
	b.WriteByte('\n')
}

func rateLine(now, before float64, prevCreated int, flag bool) string {
	s := fmt.Sprintf("%3.0f%%", now*100)
	if prevCreated > 0 {
		s += fmt.Sprintf(" (prev %3.0f%%, %+.0f pts)", before*100, (now-before)*100)
	} else {
		s += " (no previous)"
	}
	if flag {
		s += " !"
	}
	return s
}

func reasons(by map[string]int) string {
	type rc struct {
		r string
		n int
	}
	var list []rc
	for r, n := range by {
		list = append(list, rc{r, n})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].n != list[j].n {
			return list[i].n > list[j].n
		}
		return list[i].r < list[j].r
	})
	parts := make([]string, 0, len(list))
	for _, x := range list {
		parts = append(parts, fmt.Sprintf("%s %d", x.r, x.n))
	}
	return strings.Join(parts, ", ")
}

// renderCSV writes one line per destination, conversion and day, then a total line per
// conversion (day "total") carrying the rates and flags.
func renderCSV(w io.Writer, r Report) error {
	cw := csv.NewWriter(w)
	head := []string{"destination", "platform", "conversion", "day", "matched", "created", "accepted", "sent", "rejected", "expired", "skipped", "unmatched", "awaiting", "queued", "in_retry", "failed", "with_identifier", "rejected_by_reason", "match_rate", "previous_match_rate", "match_rate_flag", "accepted_rate", "previous_accepted_rate", "accepted_rate_flag", "weekly_volume", "sparse_flag",
		"with_click_id", "with_email", "with_phone", "with_lead_id", "click_id_share", "email_share", "phone_share", "lead_id_share", "not_supported"}
	if err := cw.Write(head); err != nil {
		return err
	}
	for _, c := range r.Conversions {
		for _, d := range c.Days {
			rec := append([]string{c.Destination, c.Platform, c.Conversion, d.Day.Format(time.DateOnly)}, ints(d.Counts)...)
			rec = append(rec, reasons(d.RejectedBy), "", "", "", "", "", "", "", "")
			rec = append(rec, kindCells(d.Counts, d.IdentifierShare)...)
			rec = append(rec, strconv.Itoa(d.NotSupported))
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		rec := append([]string{c.Destination, c.Platform, c.Conversion, "total"}, ints(c.Total)...)
		rec = append(rec, reasons(c.Total.RejectedBy),
			f(c.MatchRate), f(c.PreviousMatchRate), strconv.FormatBool(c.MatchRateFlag),
			f(c.AcceptedRate), f(c.PreviousAcceptedRate), strconv.FormatBool(c.AcceptedRateFlag),
			strconv.FormatFloat(c.WeeklyVolume, 'f', 1, 64), strconv.FormatBool(c.SparseFlag))
		rec = append(rec, kindCells(c.Total, c.IdentifierShare)...)
		rec = append(rec, strconv.Itoa(c.Total.NotSupported))
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func ints(c Counts) []string {
	out := make([]string, 0, 13)
	for _, n := range row(c) {
		out = append(out, strconv.Itoa(n))
	}
	return append(out, strconv.Itoa(c.WithIdentifier))
}

// kindCells are the identifier-kind columns of a CSV line: counts, then shares.
func kindCells(c Counts, s IdentifierShares) []string {
	k := c.Identifiers
	return []string{strconv.Itoa(k.ClickID), strconv.Itoa(k.Email), strconv.Itoa(k.Phone), strconv.Itoa(k.LeadID),
		f(s.ClickID), f(s.Email), f(s.Phone), f(s.LeadID)}
}

func f(x float64) string { return strconv.FormatFloat(x, 'f', 4, 64) }

// writeCRMs writes the enrichment lines: per CRM connection, the rows waiting for its API
// (now, whatever the period) and its pause.
func writeCRMs(b *strings.Builder, crms []enrich.ConnectionOverview) {
	if len(crms) == 0 {
		return
	}
	b.WriteString("\nCRM enrichment now (rows waiting for the CRM's API)\n")
	for _, c := range crms {
		name := c.Name
		if name == "" {
			name = "(no connection)"
		}
		fmt.Fprintf(b, "%-16s %-10s %6d conversions %6d stage changes", name, c.Source, c.Conversions, c.Pending)
		if c.Waiting() > 0 && c.OldestAge != "" {
			fmt.Fprintf(b, ", oldest %s", c.OldestAge)
		}
		if c.Paused {
			fmt.Fprintf(b, "\n! paused        %s since %s until %s: %s", c.PauseReason, c.PausedSince.Format("2006-01-02 15:04"),
				c.PausedUntil.Format("15:04"), c.PauseDetail)
		} else if c.Name == "" {
			b.WriteString("\n! no connection enriches this source: its rows wait until one is configured")
		}
		b.WriteByte('\n')
	}
}
