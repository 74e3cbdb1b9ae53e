package replay

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary reports one replay: what it read and what it created, or in a dry run what it
// would create. Its JSON form is what `closedloop replay --json` prints.
type Summary struct {
	Source string   `json:"source"` // "kafka" or "file"
	Topics []string `json:"topics,omitempty"`
	File   string   `json:"file,omitempty"`
	Format string   `json:"format,omitempty"`
	// From and To bound the message timestamps (Kafka) or close times (file) replayed.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Destinations is the destination filter; empty means every destination.
	Destinations []string `json:"destinations,omitempty"`
	DryRun       bool     `json:"dry_run"`
	// Interrupted is true when the replay was cancelled before the end of its range;
	// Partitions says how far each partition got. Running it again is safe.
	Interrupted    bool    `json:"interrupted"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`

	// Read counts messages (Kafka) or records (file lines, CSV rows) read; Skipped those
	// outside [From, To).
	Read    int64 `json:"read"`
	Skipped int64 `json:"skipped"`
	// Undecodable counts messages or events that could not be decoded (the live consumer
	// dead-lettered them; a replay only counts them) and, for a file, rows with errors.
	Undecodable int `json:"undecodable"`
	Decoded     int `json:"decoded"`   // stage changes decoded
	Ignored     int `json:"ignored"`   // events that are not stage changes
	Matched     int `json:"matched"`   // stage changes some rule matched
	Unmatched   int `json:"unmatched"` // stage changes no rule matched

	// Conversions sums ByDestination.
	Conversions   Counts               `json:"conversions"`
	ByDestination []DestinationSummary `json:"by_destination"`
	ByRule        []RuleSummary        `json:"by_rule"`

	// Partitions says, per partition of a Kafka replay, the offset range and how far the
	// replay got.
	Partitions []PartitionProgress `json:"partitions,omitempty"`
	// LastLine is, for a file, the last line whose records were fully handled.
	LastLine int `json:"last_line,omitempty"`
	// Errors lists file records that were skipped, Warnings identifiers that were dropped
	// from records that were kept; at most MaxListed of each, the rest counted in
	// MoreErrors and MoreWarnings. They never contain a raw email or phone.
	Errors       []LineError `json:"errors,omitempty"`
	MoreErrors   int         `json:"more_errors,omitempty"`
	Warnings     []LineError `json:"warnings,omitempty"`
	MoreWarnings int         `json:"more_warnings,omitempty"`
}

// MaxListed bounds Summary.Errors and Summary.Warnings.
const MaxListed = 100

// Counts counts conversions planned by the mapping (after the destination filter).
type Counts struct {
	Planned  int `json:"planned"`
	New      int `json:"new"`               // created; in a dry run, what a replay would create
	Existing int `json:"existing"`          // key already stored: skipped
	Awaiting int `json:"awaiting_identity"` // of New: waiting for an identifier
}

func (c *Counts) add(created, awaiting bool) {
	c.Planned++
	switch {
	case !created:
		c.Existing++
	case awaiting:
		c.New++
		c.Awaiting++
	default:
		c.New++
	}
}

// DestinationSummary counts one destination's conversions and forecasts what its platform
// will do with the new ones (the platform's own Check at the time of the replay).
type DestinationSummary struct {
	Destination string `json:"destination"`
	Platform    string `json:"platform"`
	Counts
	// Forecast is false when the platform was not available to check the new rows.
	Forecast bool `json:"forecast"`
	// WillExpire counts new rows already outside the platform's window (Meta: 7 days
	// from the close; Google: the click window): they will end expired, never sent.
	WillExpire int `json:"will_expire"`
	// WillSkip counts new rows the platform skips (consent denied, a retraction it cannot
	// send); WillReject new ready rows it refuses (invalid value, no usable identifier).
	WillSkip   int `json:"will_skip"`
	WillReject int `json:"will_reject"`
	// Reasons counts the reason codes behind WillExpire, WillSkip and WillReject.
	Reasons map[string]int `json:"reasons,omitempty"`
}

// RuleSummary counts one rule's conversions for one destination.
type RuleSummary struct {
	Rule        string `json:"rule"`
	Destination string `json:"destination"`
	Counts
}

// PartitionProgress is how far a Kafka replay got in one partition: every offset in
// [Start, Reached) was handled; the range to replay was [Start, End).
type PartitionProgress struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Start     int64  `json:"start"`
	End       int64  `json:"end"`
	Reached   int64  `json:"reached"`
	Read      int64  `json:"read"`
	Skipped   int64  `json:"skipped"`
}

// Done reports whether the partition's whole range was handled.
func (p PartitionProgress) Done() bool { return p.Reached >= p.End }

// LineError is one problem in a file, by line (1-based) and, for a batch format, event.
type LineError struct {
	Line   int    `json:"line"`
	Event  *int   `json:"event,omitempty"` // index within the line's batch
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func (e LineError) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "line %d", e.Line)
	if e.Event != nil {
		fmt.Fprintf(&b, " event %d", *e.Event)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// WriteTable writes s for a person: what was read, the conversions per destination with
// the expiry forecast, per rule, the partitions' progress and the file's errors.
func (s *Summary) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	what := strings.Join(s.Topics, ", ")
	if s.Source == "file" {
		what = s.File + " (" + s.Format + ")"
	}
	mode := "Replay"
	if s.DryRun {
		mode = "Dry run"
	}
	ew.printf("%s of %s", mode, what)
	if !s.From.IsZero() || !s.To.IsZero() {
		ew.printf(" from %s to %s", timeOrOpen(s.From, "the start"), timeOrOpen(s.To, "the end"))
	}
	if len(s.Destinations) > 0 {
		ew.printf(", destinations %s", strings.Join(s.Destinations, ", "))
	}
	ew.printf(" (%.1fs)\n", s.ElapsedSeconds)
	switch {
	case s.Interrupted && s.Source == "file":
		ew.printf("INTERRUPTED: stopped after line %d. Running the same replay again is safe.\n", s.LastLine)
	case s.Interrupted:
		ew.printf("INTERRUPTED: stopped before the end of the range; the partitions below say how far it got. Running the same replay again is safe.\n")
	}
	if s.DryRun {
		ew.printf("Nothing was written: NEW is what a replay would create.\n")
	}
	unit := "messages"
	if s.Source == "file" {
		unit = "records"
	}
	ew.printf("\nread %d %s (%d outside the range), undecodable %d\n", s.Read, unit, s.Skipped, s.Undecodable)
	ew.printf("stage changes decoded %d: matched a rule %d, no rule %d; other events ignored %d\n",
		s.Decoded, s.Matched, s.Unmatched, s.Ignored)
	c := s.Conversions
	ew.printf("conversions planned %d: new %d (awaiting identity %d), already existing %d (skipped by key)\n",
		c.Planned, c.New, c.Awaiting, c.Existing)

	if len(s.ByDestination) > 0 {
		ew.printf("\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DESTINATION\tPLATFORM\tPLANNED\tNEW\tEXISTING\tAWAITING\tWILL EXPIRE\tWILL SKIP\tWILL REJECT")
		for _, d := range s.ByDestination {
			exp, skip, rej := strconvOrDash(d.WillExpire, d.Forecast), strconvOrDash(d.WillSkip, d.Forecast), strconvOrDash(d.WillReject, d.Forecast)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", d.Destination, d.Platform, d.Planned, d.New, d.Existing, d.Awaiting, exp, skip, rej)
		}
		_ = tw.Flush()
		for _, d := range s.ByDestination {
			if len(d.Reasons) > 0 {
				ew.printf("  %s: %s\n", d.Destination, reasons(d.Reasons))
			}
		}
	}
	if len(s.ByRule) > 0 {
		ew.printf("\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RULE\tDESTINATION\tPLANNED\tNEW\tEXISTING\tAWAITING")
		for _, r := range s.ByRule {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", r.Rule, r.Destination, r.Planned, r.New, r.Existing, r.Awaiting)
		}
		_ = tw.Flush()
	}
	if len(s.Partitions) > 0 {
		ew.printf("\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tSTART\tEND\tREACHED\tREAD\tOUTSIDE\tDONE")
		for _, p := range s.Partitions {
			done := "yes"
			if !p.Done() {
				done = "no"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.Start, p.End, p.Reached, p.Read, p.Skipped, done)
		}
		_ = tw.Flush()
	}
	if len(s.Errors) > 0 {
		ew.printf("\nerrors (records skipped):\n")
		for _, e := range s.Errors {
			ew.printf("  %s\n", e)
		}
		if s.MoreErrors > 0 {
			ew.printf("  ... and %d more\n", s.MoreErrors)
		}
	}
	if len(s.Warnings) > 0 {
		ew.printf("\nwarnings (identifier dropped, record kept):\n")
		for _, e := range s.Warnings {
			ew.printf("  %s\n", e)
		}
		if s.MoreWarnings > 0 {
			ew.printf("  ... and %d more\n", s.MoreWarnings)
		}
	}
	return ew.err
}

func timeOrOpen(t time.Time, open string) string {
	if t.IsZero() {
		return open
	}
	return t.UTC().Format(time.RFC3339)
}

func strconvOrDash(n int, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprint(n)
}

func reasons(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// errWriter remembers the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }
