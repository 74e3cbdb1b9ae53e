package identity

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// Format is the layout of a capture file.
type Format string

const (
	FormatCSV   Format = "csv"   // a header row (see CSVColumns), then one capture per record
	FormatJSONL Format = "jsonl" // one canonical JSON capture per line; blank lines skipped
)

// FormatOf picks the format from a file name: .csv, or .jsonl / .ndjson.
func FormatOf(path string) (Format, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return FormatCSV, nil
	case ".jsonl", ".ndjson":
		return FormatJSONL, nil
	}
	return "", fmt.Errorf("%s: cannot tell the format from the extension (want .csv, .jsonl or .ndjson)", filepath.Base(path))
}

// Sink stores captures idempotently: writing the same capture twice reports it Unchanged.
// *store.Store is the production sink.
type Sink interface {
	UpsertIdentities(ctx context.Context, captures []store.IdentityCapture) (store.UpsertResult, error)
}

// Rejection is one capture that could not be imported.
type Rejection struct {
	Line   int    `json:"line"`   // 1-based line of the file where the record starts
	Reason string `json:"reason"` // a *FieldError's text: names the field, never echoes a value
}

// Summary counts an import. Imported+Merged+Unchanged+Rejected = records read.
type Summary struct {
	Read       int         `json:"read"`
	Imported   int         `json:"imported"`
	Merged     int         `json:"merged"`
	Unchanged  int         `json:"unchanged"`
	Rejected   int         `json:"rejected"`
	Rejections []Rejection `json:"rejections,omitempty"` // the first Options.MaxRejections
}

// Options tune Import. The zero value works (with no default phone region).
type Options struct {
	Normalizer    pii.Normalizer
	BatchSize     int           // captures per sink write; default 500
	MaxRejections int           // rejections kept in Summary.Rejections; default 1000
	Progress      func(Summary) // called after each batch is written; may be nil
}

// Import reads captures from r in format, decodes and hashes each, and writes them to sink in
// batches of opts.BatchSize. A record that does not decode is counted as rejected with its
// line and reason, and the import goes on. The returned error is for what stops the whole
// import: an unreadable file or CSV header, a sink failure, ctx cancellation; the Summary
// then counts what was written before it. Memory is bounded by the batch size.
func Import(ctx context.Context, r io.Reader, format Format, sink Sink, opts Options) (Summary, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.MaxRejections <= 0 {
		opts.MaxRejections = 1000
	}
	im := &importer{ctx: ctx, sink: sink, opts: opts, batch: make([]store.IdentityCapture, 0, opts.BatchSize)}
	var err error
	switch format {
	case FormatCSV:
		err = im.csv(r)
	case FormatJSONL:
		err = im.jsonl(r)
	default:
		return Summary{}, fmt.Errorf("import: unknown format %q (want csv or jsonl)", format)
	}
	if err == nil {
		err = im.flush()
	}
	return im.sum, err
}

type importer struct {
	ctx      context.Context
	sink     Sink
	opts     Options
	batch    []store.IdentityCapture
	lastLine int
	sum      Summary
}

func (im *importer) add(line int, c store.IdentityCapture, err error) error {
	im.sum.Read++
	if err != nil {
		im.reject(line, err.Error())
		return nil
	}
	im.batch = append(im.batch, c)
	im.lastLine = line
	if len(im.batch) >= im.opts.BatchSize {
		return im.flush()
	}
	return nil
}

func (im *importer) reject(line int, reason string) {
	im.sum.Rejected++
	if len(im.sum.Rejections) < im.opts.MaxRejections {
		im.sum.Rejections = append(im.sum.Rejections, Rejection{Line: line, Reason: reason})
	}
}

func (im *importer) flush() error {
	if len(im.batch) == 0 {
		return nil
	}
	if err := im.ctx.Err(); err != nil {
		return err
	}
	n, err := im.sink.UpsertIdentities(im.ctx, im.batch)
	if err != nil {
		return fmt.Errorf("import: write batch ending at line %d: %w", im.lastLine, err)
	}
	if got := n.Inserted + n.Merged + n.Unchanged; got != len(im.batch) {
		return fmt.Errorf("import: sink counted %d of a batch of %d captures", got, len(im.batch))
	}
	im.sum.Imported += n.Inserted
	im.sum.Merged += n.Merged
	im.sum.Unchanged += n.Unchanged
	im.batch = im.batch[:0]
	if im.opts.Progress != nil {
		im.opts.Progress(im.sum)
	}
	return nil
}

func (im *importer) jsonl(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for line := 1; ; line++ {
		if err := im.ctx.Err(); err != nil {
			return err
		}
		buf = buf[:0]
		tooLong := false
		var err error
		for {
			var frag []byte
			frag, err = br.ReadSlice('\n')
			if !tooLong {
				if len(buf)+len(frag) > MaxPayload+1 { // +1: the newline itself
					tooLong, buf = true, buf[:0]
				} else {
					buf = append(buf, frag...)
				}
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("import: read line %d: %w", line, err)
		}
		switch {
		case tooLong:
			if aerr := im.add(line, store.IdentityCapture{}, &FieldError{Field: "payload", Reason: "larger than 1 MiB"}); aerr != nil {
				return aerr
			}
		case len(bytes.TrimSpace(buf)) > 0:
			c, derr := Decode(buf, im.opts.Normalizer)
			if aerr := im.add(line, c, derr); aerr != nil {
				return aerr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

func (im *importer) csv(r io.Reader) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // DecodeCSVRecord reports a short or long record as a rejection
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return errors.New("import: empty CSV file (want a header row)")
	}
	if err != nil {
		return fmt.Errorf("import: CSV header: %w", err)
	}
	cols, err := parseCSVHeader(header)
	if err != nil {
		return fmt.Errorf("import: CSV header: %w", err)
	}
	for {
		if err := im.ctx.Err(); err != nil {
			return err
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			im.sum.Read++
			im.reject(pe.StartLine, "csv: "+pe.Err.Error())
			continue
		}
		if err != nil {
			return fmt.Errorf("import: read CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		c, derr := cols.decode(rec, im.opts.Normalizer)
		if aerr := im.add(line, c, derr); aerr != nil {
			return aerr
		}
	}
}
