package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/closedloop/closedloop/consumer"
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
)

// File formats. FormatCSV is the export layout of EXPORT.md; the others are JSON lines,
// one message of that crm format per line (FormatJSONL is canonical JSON lines).
const (
	FormatCSV   = "csv"
	FormatJSONL = "jsonl"
)

// FileFormats lists the formats File accepts.
var FileFormats = append([]string{FormatCSV, FormatJSONL}, crm.Formats...)

// FileOptions says which export to replay.
type FileOptions struct {
	Options
	// Path is the export file.
	Path string
	// Format is one of FileFormats; "" picks csv for a .csv file and canonical JSON lines
	// otherwise.
	Format string
	// From and To, when set, keep only stage changes whose close time (occurred_at) is in
	// [From, To).
	From, To time.Time
}

// FileFormatFor returns the format File assumes for path when none is given.
func FileFormatFor(path string) string {
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		return FormatCSV
	}
	return FormatJSONL
}

// File replays a CRM export: each record becomes canonical stage changes (raw email and
// phone hashed at once, never kept) that go through the pipeline in batches. Records with
// errors are skipped and listed in the summary by line. On cancellation the batch in hand
// is finished and the summary is returned with Interrupted set, with ctx's error.
func (r *Replayer) File(ctx context.Context, opts FileOptions) (*Summary, error) {
	format := strings.ToLower(strings.TrimSpace(opts.Format))
	if format == "" {
		format = FileFormatFor(opts.Path)
	}
	if !validFileFormat(format) {
		return nil, fmt.Errorf("replay: format %q: want one of %s", opts.Format, strings.Join(FileFormats, ", "))
	}
	if !opts.From.IsZero() && !opts.To.IsZero() && !opts.From.Before(opts.To) {
		return nil, fmt.Errorf("replay: from (%s) must be before to (%s)", opts.From.Format(time.RFC3339), opts.To.Format(time.RFC3339))
	}
	total, err := countRecords(opts.Path, format)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer f.Close()

	sum := &Summary{Source: "file", File: opts.Path, Format: format, From: opts.From, To: opts.To}
	u, err := r.newRun(opts.Options, map[string]string{fileTopic: crm.FormatCanonical}, sum)
	if err != nil {
		return nil, err
	}
	fr := &fileReader{
		run: u, opts: opts, format: format, normalizer: r.cfg.Normalizer, total: total,
		batch: make([]kafka.Message, 0, r.cfg.Kafka.BatchSize), batchSize: r.cfg.Kafka.BatchSize,
	}
	if format == FormatCSV {
		err = fr.readCSV(ctx, f)
	} else {
		err = fr.readJSONL(ctx, f)
	}
	if err == nil {
		err = fr.flush(ctx)
	}
	sum = u.finish(ctx)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return sum, err
}

// fileTopic is the pseudo topic of messages built from a file.
const fileTopic = "replay-file"

func validFileFormat(f string) bool {
	for _, k := range FileFormats {
		if k == f {
			return true
		}
	}
	return false
}

// countRecords counts the lines that hold records, for the progress total: non-blank
// lines, less the header of a CSV file (a quoted field spanning lines makes it an
// estimate).
func countRecords(path, format string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var n int64
	blank := true
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("replay: read %s: %w", path, err)
		}
		switch b {
		case '\n':
			if !blank {
				n++
			}
			blank = true
		case ' ', '\t', '\r':
		default:
			blank = false
		}
	}
	if !blank {
		n++
	}
	if format == FormatCSV && n > 0 {
		n-- // the header
	}
	return n, nil
}

// fileReader turns records into canonical messages and processes them in batches.
type fileReader struct {
	*run
	opts       FileOptions
	format     string
	normalizer pii.Normalizer
	total      int64

	batch     []kafka.Message
	batchSize int
	// pending counts records read since the last flush (for progress), skipped those of
	// them outside [From, To) and bad those with errors.
	pending, skipped int64
	bad              int
	lastLine         int
}

// addError records a skipped record.
func (fr *fileReader) addError(e LineError) {
	fr.bad++
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if len(fr.sum.Errors) < MaxListed {
		fr.sum.Errors = append(fr.sum.Errors, e)
	} else {
		fr.sum.MoreErrors++
	}
}

// addWarning records an identifier dropped from a kept record.
func (fr *fileReader) addWarning(e LineError) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if len(fr.sum.Warnings) < MaxListed {
		fr.sum.Warnings = append(fr.sum.Warnings, e)
	} else {
		fr.sum.MoreWarnings++
	}
}

// decoded decodes one record's payload in format, records its errors and warnings by
// line, and queues its stage changes in range as canonical messages. Raw identifiers in
// payload are hashed by the decoder; only the hashes go on.
func (fr *fileReader) decoded(ctx context.Context, line int, format string, payload []byte) error {
	fr.pending++
	fr.lastLine = line
	dec, err := crm.Decode(format, payload, fr.normalizer)
	if err != nil {
		var de *crm.DecodeError
		if errors.As(err, &de) {
			fr.addError(lineError(line, de))
		} else {
			fr.addError(LineError{Line: line, Reason: "cannot be decoded"})
		}
		return fr.maybeFlush(ctx)
	}
	for _, b := range dec.Bad {
		fr.addError(lineError(line, b))
	}
	for _, d := range dec.Dropped {
		fr.addWarning(lineError(line, d))
	}
	if dec.Ignored > 0 {
		fr.mu.Lock()
		fr.sum.Ignored += dec.Ignored
		fr.mu.Unlock()
	}
	inRange := 0
	for _, sc := range dec.Changes {
		if sc.OccurredAt.Before(fr.opts.From) || (!fr.opts.To.IsZero() && !sc.OccurredAt.Before(fr.opts.To)) {
			continue
		}
		inRange++
		sc.OccurredAt = sc.OccurredAt.UTC()
		value, err := json.Marshal(sc)
		if err != nil {
			return fmt.Errorf("replay: line %d: encode stage change: %w", line, err)
		}
		fr.batch = append(fr.batch, kafka.Message{
			Topic: fileTopic, Offset: int64(line), Value: value,
			Headers: []kafka.Header{{Key: consumer.HeaderFormat, Value: []byte(crm.FormatCanonical)}},
		})
	}
	if len(dec.Changes) > 0 && inRange == 0 {
		fr.skipped++
	}
	return fr.maybeFlush(ctx)
}

func lineError(line int, de *crm.DecodeError) LineError {
	e := LineError{Line: line, Field: de.Field, Reason: de.Reason}
	if de.Index >= 0 {
		i := de.Index
		e.Event = &i
	}
	return e
}

func (fr *fileReader) maybeFlush(ctx context.Context) error {
	if len(fr.batch) < fr.batchSize {
		if ctx.Err() != nil {
			return fr.flush(ctx)
		}
		return nil
	}
	return fr.flush(ctx)
}

// flush processes the queued messages and accounts for the records read since the last
// flush. After ctx is cancelled it processes what it holds and returns ctx's error.
func (fr *fileReader) flush(ctx context.Context) error {
	st, err := fr.process(ctx, fr.batch)
	if err != nil {
		return fmt.Errorf("replay: lines up to %d: %w", fr.lastLine, err)
	}
	fr.batch = fr.batch[:0]
	read, skipped, bad, last := fr.pending, fr.skipped, fr.bad, fr.lastLine
	fr.pending, fr.skipped, fr.bad = 0, 0, 0
	fr.account(st, read, fr.total, func(s *Summary) {
		s.Read += read
		s.Skipped += skipped
		s.Undecodable += bad
		s.LastLine = max(s.LastLine, last)
	})
	return ctx.Err()
}

// ---- CSV ----

// csvColumns are the columns of the export layout (EXPORT.md); required ones must be in
// the header and set on every row.
var csvColumns = map[string]bool{
	"source": true, "object_type": true, "object_id": true, "stage": true, "occurred_at": true,
	"pipeline": false, "previous_stage": false, "status": false, "amount": false, "currency": false,
	"contact_ids": false, "email": false, "phone": false, "lead_id": false,
}

// csvPropertyPrefix marks a column whose values go to properties{} (for value rules).
const csvPropertyPrefix = "properties."

func csvColumnKnown(name string) bool {
	if _, ok := csvColumns[name]; ok {
		return true
	}
	for _, k := range crm.ClickIDKeys {
		if k == name {
			return true
		}
	}
	return strings.HasPrefix(name, csvPropertyPrefix) && len(name) > len(csvPropertyPrefix)
}

// csvTimeLayouts are the occurred_at forms accepted beside RFC 3339; they are read as UTC.
var csvTimeLayouts = []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"}

func (fr *fileReader) readCSV(ctx context.Context, f io.Reader) error {
	cr := csv.NewReader(stripBOM(f))
	cr.FieldsPerRecord = -1 // checked per row, to report the line
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return errors.New("replay: the file is empty: want a header row (see internal/replay/EXPORT.md)")
	}
	if err != nil {
		return fmt.Errorf("replay: header: %w", err)
	}
	cols := make([]string, len(header))
	var problems []string
	seen := map[string]bool{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		cols[i] = name
		switch {
		case name == "":
			problems = append(problems, fmt.Sprintf("column %d has no name", i+1))
		case !csvColumnKnown(name):
			problems = append(problems, fmt.Sprintf("unknown column %s", quoteShort(name)))
		case seen[name]:
			problems = append(problems, fmt.Sprintf("column %s appears twice", name))
		}
		seen[name] = true
	}
	for _, req := range []string{"source", "object_type", "object_id", "stage", "occurred_at"} {
		if !seen[req] {
			problems = append(problems, "missing column "+req)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("replay: line 1 (header): %s (see internal/replay/EXPORT.md)", strings.Join(problems, "; "))
	}
	for {
		if ctx.Err() != nil {
			return fr.flush(ctx)
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				fr.pending++
				fr.lastLine = pe.Line
				fr.addError(LineError{Line: pe.StartLine, Reason: "not valid CSV: " + pe.Err.Error()})
				if err := fr.maybeFlush(ctx); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("replay: read %s: %w", fr.opts.Path, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a blank line
		}
		line, _ := cr.FieldPos(0)
		payload, warn, lerr := fr.csvRow(cols, rec)
		for _, w := range warn {
			w.Line = line
			fr.addWarning(w)
		}
		if lerr != nil {
			fr.pending++
			fr.lastLine = line
			lerr.Line = line
			fr.addError(*lerr)
			if err := fr.maybeFlush(ctx); err != nil {
				return err
			}
			continue
		}
		if err := fr.decoded(ctx, line, crm.FormatCanonical, payload); err != nil {
			return err
		}
	}
}

// csvRow builds the canonical JSON of one row. Raw email and phone are hashed here into
// identifiers{}; the returned payload holds no raw identifier. Errors name the column,
// never a value.
func (fr *fileReader) csvRow(cols, rec []string) ([]byte, []LineError, *LineError) {
	if len(rec) != len(cols) {
		return nil, nil, &LineError{Reason: fmt.Sprintf("has %d columns, the header has %d", len(rec), len(cols))}
	}
	doc := map[string]any{}
	clicks := map[string]string{}
	props := map[string]string{}
	ids := pii.Set{}
	var warn []LineError
	for i, name := range cols {
		v := strings.TrimSpace(rec[i])
		if v == "" {
			if csvColumns[name] {
				return nil, nil, &LineError{Field: name, Reason: "required"}
			}
			continue
		}
		switch {
		case name == "occurred_at":
			t, err := ParseTime(v)
			if err != nil {
				return nil, nil, &LineError{Field: name, Reason: err.Error()}
			}
			doc[name] = t.UTC().Format(time.RFC3339Nano)
		case name == "amount":
			if _, err := decimal.NewFromString(v); err != nil || strings.ContainsAny(v, "xXpP_") {
				return nil, nil, &LineError{Field: name, Reason: "is not a decimal number (use a dot for decimals, no thousands separators or currency signs)"}
			}
			doc[name] = v
		case name == "contact_ids":
			var list []string
			for _, c := range strings.Split(v, ";") {
				if c = strings.TrimSpace(c); c != "" {
					list = append(list, c)
				}
			}
			if len(list) > 0 {
				doc[name] = list
			}
		case name == "email" || name == "phone":
			field := pii.Email
			if name == "phone" {
				field = pii.Phone
			}
			if err := fr.normalizer.Add(ids, field, v); err != nil {
				reason := "cannot be normalized"
				var pe *pii.Error
				if errors.As(err, &pe) && pe.Reason != "" {
					reason = pe.Reason
				}
				warn = append(warn, LineError{Field: name, Reason: reason + "; identifier dropped, the record was kept"})
			}
		case strings.HasPrefix(name, csvPropertyPrefix):
			props[strings.TrimPrefix(name, csvPropertyPrefix)] = v
		default:
			if _, std := csvColumns[name]; std {
				doc[name] = v
			} else {
				clicks[name] = v // a click id column
			}
		}
	}
	if len(clicks) > 0 {
		doc["click_ids"] = clicks
	}
	if len(props) > 0 {
		doc["properties"] = props
	}
	if len(ids) > 0 {
		doc["identifiers"] = ids
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, &LineError{Reason: "cannot be encoded"}
	}
	return payload, warn, nil
}

// ParseTime reads an RFC 3339 time, or YYYY-MM-DD HH:MM:SS, YYYY-MM-DDTHH:MM:SS,
// YYYY-MM-DD HH:MM or YYYY-MM-DD in UTC. The error never echoes s.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, l := range csvTimeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("must be an RFC 3339 time (2024-05-01T10:00:00Z), or YYYY-MM-DD HH:MM:SS or YYYY-MM-DD in UTC")
}

// ---- JSON lines ----

func (fr *fileReader) readJSONL(ctx context.Context, f io.Reader) error {
	format := fr.format
	if format == FormatJSONL {
		format = crm.FormatCanonical
	}
	sc := bufio.NewScanner(stripBOM(f))
	sc.Buffer(make([]byte, 0, 64<<10), crm.MaxPayloadBytes+2)
	line := 0
	for sc.Scan() {
		line++
		if ctx.Err() != nil {
			return fr.flush(ctx)
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if err := fr.decoded(ctx, line, format, b); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("replay: line %d: longer than %d bytes, the largest message accepted", line+1, crm.MaxPayloadBytes)
		}
		return fmt.Errorf("replay: read %s: %w", fr.opts.Path, err)
	}
	return nil
}

// stripBOM drops a UTF-8 byte order mark (spreadsheet exports start with one).
func stripBOM(r io.Reader) io.Reader {
	br := bufio.NewReader(r)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
	return br
}

// quoteShort quotes s for an error message, cut to 40 bytes.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}
