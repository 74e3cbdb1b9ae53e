package identity

import (
	"strings"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// CSVColumns lists every column a capture CSV header may name, in the documented order.
// subject_type, subject_id and captured_at are required; subject_source is required too
// except in files whose subjects are all emails. Each click ID type has an optional
// "<type>_clicked_at" column (RFC 3339; empty means captured_at). Column names are
// case-insensitive; order is free; an unknown column is an error.
var CSVColumns = func() []string {
	cols := []string{"subject_type", "subject_source", "subject_id", "captured_at",
		"email", "phone", "first_name", "last_name", "city", "state", "zip", "postal_code",
		"country", "date_of_birth", "gender", "external_id", "ip", "user_agent", "lead_id"}
	for _, t := range ClickTypes {
		cols = append(cols, t, t+"_clicked_at")
	}
	return append(cols, "consent_ad_user_data", "consent_ad_personalization")
}()

var requiredCSVColumns = []string{"subject_type", "subject_id", "captured_at"}

// CheckCSVHeader reports the first problem with a capture CSV header: a missing required
// column, an unknown or repeated column. The error is a *FieldError naming the column.
func CheckCSVHeader(header []string) error {
	_, err := parseCSVHeader(header)
	return err
}

// csvHeader is a checked header: the normalized column name of each field.
type csvHeader []string

var knownCSVColumns = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range CSVColumns {
		m[c] = true
	}
	return m
}()

func parseCSVHeader(header []string) (csvHeader, error) {
	cols := make(csvHeader, len(header))
	seen := map[string]bool{}
	for i, h := range header {
		h = csvColumn(h, i)
		if !knownCSVColumns[h] {
			return nil, &FieldError{Field: "column " + keyName(h), Reason: "unknown column (see identity.CSVColumns)"}
		}
		if seen[h] {
			return nil, &FieldError{Field: "column " + h, Reason: "appears twice"}
		}
		seen[h] = true
		cols[i] = h
	}
	for _, r := range requiredCSVColumns {
		if !seen[r] {
			return nil, &FieldError{Field: "column " + r, Reason: "required column missing from the header"}
		}
	}
	return cols, nil
}

// csvColumn normalizes a header cell: trimmed, lower case, a UTF-8 BOM dropped from the first.
func csvColumn(h string, i int) string {
	if i == 0 {
		h = strings.TrimPrefix(h, "\ufeff")
	}
	return strings.ToLower(strings.TrimSpace(h))
}

// DecodeCSVRecord validates and hashes one CSV record under header (see CSVColumns) exactly
// as Decode does for JSON; an empty cell is an absent value. Errors are *FieldError.
func DecodeCSVRecord(header, record []string, n pii.Normalizer) (store.IdentityCapture, error) {
	h, err := parseCSVHeader(header)
	if err != nil {
		return store.IdentityCapture{}, err
	}
	return h.decode(record, n)
}

func (header csvHeader) decode(record []string, n pii.Normalizer) (store.IdentityCapture, error) {
	if len(record) != len(header) {
		return store.IdentityCapture{}, &FieldError{Field: "record", Reason: "has a different number of fields than the header"}
	}
	rc := rawCapture{clicks: map[string]rawClick{}, pii: map[pii.Field]string{}}
	for i, col := range header {
		v := strings.TrimSpace(record[i])
		if v == "" {
			continue
		}
		switch col {
		case "subject_type":
			rc.subjectType = v
		case "subject_source":
			rc.subjectSource = v
		case "subject_id":
			rc.subjectID = v
		case "captured_at":
			rc.capturedAt = v
		case "ip":
			rc.ip = v
		case "user_agent":
			rc.userAgent = v
		case "lead_id":
			rc.leadID = v
		case "consent_ad_user_data":
			rc.consentPresent, rc.adUserData = true, v
		case "consent_ad_personalization":
			rc.consentPresent, rc.adPersonalization = true, v
		default:
			if f, ok := piiKeys[col]; ok {
				if err := rc.setPII(col, f, v); err != nil {
					return store.IdentityCapture{}, err
				}
				continue
			}
			if t, ok := strings.CutSuffix(col, "_clicked_at"); ok && isClickType(t) {
				c := rc.clicks[t]
				c.clickedAt = v
				rc.clicks[t] = c
				continue
			}
			c := rc.clicks[col] // CheckCSVHeader left only click ID columns
			c.id = v
			rc.clicks[col] = c
		}
	}
	for t, c := range rc.clicks {
		if c.id == "" {
			return store.IdentityCapture{}, &FieldError{Field: t + "_clicked_at", Reason: "given without " + t}
		}
	}
	return rc.build(n)
}
