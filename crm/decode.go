package crm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
)

// Formats a stage-change message can arrive in. The consumer takes the format from the
// topic's config or the message's closedloop-format header.
const (
	FormatCanonical  = "canonical"
	FormatHubSpot    = "hubspot"
	FormatSalesforce = "salesforce"
	FormatPipedrive  = "pipedrive"
	FormatClose      = "close"
	FormatAttio      = "attio"
)

// Formats lists every format Decode understands, in the order the CLI shows them.
var Formats = []string{FormatCanonical, FormatHubSpot, FormatSalesforce, FormatPipedrive, FormatClose, FormatAttio}

// MaxPayloadBytes is the largest message Decode accepts (1 MiB). A HubSpot batch of 100
// events or a Salesforce outbound message of 100 notifications fits well inside it.
const MaxPayloadBytes = 1 << 20

// Decoded is the result of decoding one message. A HubSpot batch or a Salesforce outbound
// message can yield many stage changes; events of other kinds are counted, not errors; an
// event that fails while others in the same message succeed lands in Bad and the rest
// still decode.
type Decoded struct {
	Changes []StageChange `json:"changes,omitempty"`
	// Thin holds events that name an object but neither its new stage nor a time (Attio):
	// only a fetch from the CRM's API can say what they are, so the mapping plans them
	// after enrichment (see ThinChange).
	Thin []ThinChange `json:"thin,omitempty"`
	// Ignored counts events that are not stage changes: other subscription types, other
	// objects, updates that change neither stage nor status, deletions.
	Ignored int `json:"ignored"`
	// Bad holds one error per event that could not be decoded; Index says which.
	Bad []*DecodeError `json:"bad,omitempty"`
	// Dropped holds one entry per email or phone that could not be normalized: the stage
	// change was kept without that identifier. Index says which event it came from.
	Dropped []*DecodeError `json:"dropped,omitempty"`
}

// DecodeError says why a message or one event in it could not be decoded: the format, the
// field (a dotted path such as "click_ids.gclid" or "ChangeEventHeader.commitTimestamp")
// and the reason. It never contains a raw email or phone: reasons describe, never echo.
type DecodeError struct {
	Format string `json:"format"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
	// Index is the event's position in a batch (HubSpot array, Salesforce notifications or
	// event array), or -1 when the error is about the message as a whole.
	Index int `json:"index"`
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Format)
	if e.Index >= 0 {
		b.WriteString(": event ")
		b.WriteString(strconv.Itoa(e.Index))
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// decodeErr builds a DecodeError about one field; the caller's decoder fills in Format and
// Index on the way out.
func decodeErr(field, reason string, args ...any) *DecodeError {
	if len(args) > 0 {
		reason = fmt.Sprintf(reason, args...)
	}
	return &DecodeError{Field: field, Reason: reason, Index: -1}
}

// prefixed returns e with its Field moved under prefix ("data" + "stage_id" -> "data.stage_id").
func (e *DecodeError) prefixed(prefix string) *DecodeError {
	switch {
	case prefix == "":
	case e.Field == "":
		e.Field = prefix
	default:
		e.Field = prefix + "." + e.Field
	}
	return e
}

// identifierAdder is what the decoders need from pii.Normalizer: hash one raw value into a
// set. Raw values go in and only hashes stay.
type identifierAdder interface {
	Add(set pii.Set, field pii.Field, raw string) error
}

// Decode turns one message in the given format (one of Formats, any case) into canonical
// stage changes. Raw email
// and phone values are hashed through n into each change's Identifiers and dropped.
//
// The error is a *DecodeError when the message as a whole is undecodable: an unknown
// format, an empty or too large payload (over MaxPayloadBytes), malformed JSON or XML, the
// wrong top-level type, or (for single-event formats) a missing or invalid required field.
// Such a message belongs on the dead-letter topic. When only some events of a batch fail,
// the error is nil and they are listed in Decoded.Bad.
//
// Decode is safe for concurrent use when n is.
func Decode(format string, payload []byte, n pii.Normalizer) (Decoded, error) {
	return decodeWith(format, payload, n)
}

func decodeWith(format string, payload []byte, n identifierAdder) (Decoded, error) {
	format = strings.ToLower(strings.TrimSpace(format)) // a header may say "HubSpot"
	var (
		out Decoded
		err *DecodeError
	)
	switch {
	case !knownFormat(format):
		err = decodeErr("format", "unknown format %s; want one of %s", quoteShort(format), strings.Join(Formats, ", "))
	case len(payload) > MaxPayloadBytes:
		err = decodeErr("", "payload is %d bytes, over the %d-byte limit", len(payload), MaxPayloadBytes)
	case len(strings.TrimSpace(string(payload))) == 0:
		err = decodeErr("", "payload is empty")
	default:
		d := &decoder{format: format, ids: n}
		switch format {
		case FormatCanonical:
			err = d.canonical(payload)
		case FormatHubSpot:
			err = d.hubspot(payload)
		case FormatSalesforce:
			err = d.salesforce(payload)
		case FormatPipedrive:
			err = d.pipedrive(payload)
		case FormatClose:
			err = d.close(payload)
		case FormatAttio:
			err = d.attio(payload)
		}
		out = d.out
	}
	if err != nil {
		err.Format = format
		if !knownFormat(format) {
			err.Format = "decode"
		}
		return Decoded{}, err
	}
	return out, nil
}

func knownFormat(format string) bool {
	for _, f := range Formats {
		if f == format {
			return true
		}
	}
	return false
}

// quoteShort quotes s for an error message, cut to 40 bytes so a wrong argument can never
// carry a payload into a log line.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strconv.Quote(s)
}

// decoder accumulates the result of one message.
type decoder struct {
	format string
	ids    identifierAdder
	out    Decoded
}

// emit appends a decoded stage change.
func (d *decoder) emit(sc StageChange) {
	if len(sc.Identifiers) == 0 {
		sc.Identifiers = nil
	}
	d.out.Changes = append(d.out.Changes, sc)
}

// bad records one failed event of a batch.
func (d *decoder) bad(index int, e *DecodeError) {
	e.Format = d.format
	e.Index = index
	d.out.Bad = append(d.out.Bad, e)
}

// addIdentifier hashes raw into sc.Identifiers. Empty values are skipped; a value the
// normalizer refuses is dropped and recorded in Decoded.Dropped without echoing it.
func (d *decoder) addIdentifier(sc *StageChange, index int, fieldPath string, field pii.Field, raw string) {
	if strings.TrimSpace(raw) == "" {
		return
	}
	if sc.Identifiers == nil {
		sc.Identifiers = pii.Set{}
	}
	if err := d.ids.Add(sc.Identifiers, field, raw); err != nil {
		// pii.Error reasons describe the problem and never contain the value.
		reason := "cannot be normalized"
		var pe *pii.Error
		if errors.As(err, &pe) && pe.Reason != "" {
			reason = pe.Reason
		}
		d.out.Dropped = append(d.out.Dropped, &DecodeError{
			Format: d.format, Field: fieldPath, Index: index,
			Reason: reason + "; identifier dropped, the stage change was kept",
		})
	}
}
