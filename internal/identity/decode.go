package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// MaxPayload is the largest capture Decode accepts, in bytes.
const MaxPayload = 1 << 20

// maxClickID bounds a click ID's length; real ones are a few hundred characters at most.
const maxClickID = 1024

// FieldError says which field of a capture is wrong and why. Reason never contains the
// submitted value.
type FieldError struct {
	Field  string // JSON key or path ("subject.id", "click_ids.gclid"), or "payload"
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ClickTypes lists the click ID types a capture may carry, in a stable order.
var ClickTypes = []string{"gclid", "gbraid", "wbraid", "fbc", "fbp", "fbclid", "ttclid", "msclkid", "li_fat_id"}

func isClickType(t string) bool {
	for _, c := range ClickTypes {
		if c == t {
			return true
		}
	}
	return false
}

// subjectTypes are the accepted subject.type values; all but email and external are CRM
// object types a stage change can name.
var subjectTypes = map[string]bool{
	crm.ObjectContact: true, crm.ObjectLead: true, crm.ObjectDeal: true, crm.ObjectOpportunity: true,
	"email": true, "external": true,
}

// rawClick is one click ID as submitted.
type rawClick struct {
	id        string
	clickedAt string
}

// rawCapture is a capture as submitted, before validation and hashing. It holds raw PII and
// lives only inside Decode / DecodeCSVRecord.
type rawCapture struct {
	subjectType, subjectSource, subjectID string
	capturedAt                            string
	clicks                                map[string]rawClick
	pii                                   map[pii.Field]string
	ip, userAgent, leadID                 string
	consentPresent                        bool
	adUserData, adPersonalization         string
}

// piiKeys maps capture keys to the identifier they carry.
var piiKeys = map[string]pii.Field{
	"email": pii.Email, "phone": pii.Phone, "first_name": pii.FirstName, "last_name": pii.LastName,
	"city": pii.City, "state": pii.State, "zip": pii.Zip, "postal_code": pii.Zip,
	"country": pii.Country, "date_of_birth": pii.DateOfBirth, "gender": pii.Gender,
	"external_id": pii.ExternalID,
}

// Decode validates one canonical JSON identity capture and returns it hashed: raw
// identifiers are normalized and hashed with n and dropped. Errors are *FieldError.
func Decode(payload []byte, n pii.Normalizer) (store.IdentityCapture, error) {
	if len(payload) > MaxPayload {
		return store.IdentityCapture{}, &FieldError{Field: "payload", Reason: "larger than 1 MiB"}
	}
	var top map[string]json.RawMessage
	if err := strictUnmarshal(payload, &top); err != nil || top == nil {
		return store.IdentityCapture{}, &FieldError{Field: "payload", Reason: "not a JSON object"}
	}
	rc := rawCapture{clicks: map[string]rawClick{}, pii: map[pii.Field]string{}}
	for _, k := range sortedKeys(top) {
		v := top[k]
		if isNull(v) {
			continue
		}
		var err error
		switch k {
		case "subject":
			err = decodeSubject(v, &rc)
		case "captured_at":
			err = str(k, v, &rc.capturedAt)
		case "click_ids":
			err = decodeClicks(v, &rc)
		case "ip":
			err = str(k, v, &rc.ip)
		case "user_agent":
			err = str(k, v, &rc.userAgent)
		case "lead_id":
			err = leadID(v, &rc.leadID)
		case "consent":
			err = decodeConsent(v, &rc)
		default:
			f, ok := piiKeys[k]
			if !ok {
				return store.IdentityCapture{}, &FieldError{Field: keyName(k), Reason: "unknown field"}
			}
			var s string
			if err = str(k, v, &s); err == nil {
				err = rc.setPII(k, f, s)
			}
		}
		if err != nil {
			return store.IdentityCapture{}, err
		}
	}
	return rc.build(n)
}

func (rc *rawCapture) setPII(key string, f pii.Field, v string) error {
	if v == "" {
		return nil
	}
	if prev, ok := rc.pii[f]; ok && prev != v {
		return &FieldError{Field: key, Reason: "give zip or postal_code, not both"}
	}
	rc.pii[f] = v
	return nil
}

// keyName spells an unexpected JSON key for an error: as is when it is a short, plain
// identifier, otherwise quoted and cut to 40 bytes.
func keyName(k string) string {
	plain := k != "" && len(k) <= 40 && strings.IndexFunc(k, func(r rune) bool {
		return !(r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0
	if plain {
		return k
	}
	if len(k) > 40 {
		k = k[:40] + "..."
	}
	return strconv.QuoteToASCII(k)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err == nil {
		return errors.New("trailing data")
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// jsonKind names the JSON type of v for error messages (never its content).
func jsonKind(v json.RawMessage) string {
	t := bytes.TrimSpace(v)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// str decodes a JSON string; numbers are accepted for IDs written as numbers by some relays
// only where the caller says so (leadID), never here.
func str(field string, v json.RawMessage, dst *string) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return &FieldError{Field: field, Reason: "want a string, got " + jsonKind(v)}
	}
	*dst = strings.TrimSpace(*dst)
	return nil
}

func object(field string, v json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil || m == nil {
		return nil, &FieldError{Field: field, Reason: "want an object, got " + jsonKind(v)}
	}
	return m, nil
}

func decodeSubject(v json.RawMessage, rc *rawCapture) error {
	m, err := object("subject", v)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(m) {
		if isNull(m[k]) {
			continue
		}
		var dst *string
		switch k {
		case "type":
			dst = &rc.subjectType
		case "source":
			dst = &rc.subjectSource
		case "id":
			if t := jsonKind(m[k]); t == "a number" {
				// Numeric CRM ids (HubSpot) keep their digits exactly.
				rc.subjectID = string(bytes.TrimSpace(m[k]))
				continue
			}
			dst = &rc.subjectID
		default:
			return &FieldError{Field: "subject." + keyName(k), Reason: "unknown field"}
		}
		if err := str("subject."+k, m[k], dst); err != nil {
			return err
		}
	}
	return nil
}

func decodeClicks(v json.RawMessage, rc *rawCapture) error {
	m, err := object("click_ids", v)
	if err != nil {
		return err
	}
	for _, t := range sortedKeys(m) {
		field := "click_ids." + keyName(t)
		if !isClickType(t) {
			return &FieldError{Field: field, Reason: "unknown click ID type (want one of " + strings.Join(ClickTypes, ", ") + ")"}
		}
		cv := m[t]
		if isNull(cv) {
			continue
		}
		var c rawClick
		switch jsonKind(cv) {
		case "a string":
			if err := str(field, cv, &c.id); err != nil {
				return err
			}
		case "an object":
			o, _ := object(field, cv)
			for _, k := range sortedKeys(o) {
				if isNull(o[k]) {
					continue
				}
				switch k {
				case "id":
					err = str(field+".id", o[k], &c.id)
				case "clicked_at":
					err = str(field+".clicked_at", o[k], &c.clickedAt)
				default:
					err = &FieldError{Field: field + "." + keyName(k), Reason: "unknown field"}
				}
				if err != nil {
					return err
				}
			}
			if c.id == "" && c.clickedAt != "" {
				return &FieldError{Field: field + ".id", Reason: "required with clicked_at"}
			}
		default:
			return &FieldError{Field: field, Reason: "want a string or an object {id, clicked_at}, got " + jsonKind(cv)}
		}
		rc.clicks[t] = c
	}
	return nil
}

func decodeConsent(v json.RawMessage, rc *rawCapture) error {
	m, err := object("consent", v)
	if err != nil {
		return err
	}
	rc.consentPresent = true
	for _, k := range sortedKeys(m) {
		if isNull(m[k]) {
			continue
		}
		switch k {
		case "ad_user_data":
			err = str("consent."+k, m[k], &rc.adUserData)
		case "ad_personalization":
			err = str("consent."+k, m[k], &rc.adPersonalization)
		default:
			err = &FieldError{Field: "consent." + keyName(k), Reason: "unknown field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// leadID accepts a string or an integer (Meta's leadgen_id arrives as either).
func leadID(v json.RawMessage, dst *string) error {
	if jsonKind(v) == "a number" {
		var n json.Number
		if err := json.Unmarshal(v, &n); err == nil {
			if _, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
				*dst = n.String()
				return nil
			}
		}
		return &FieldError{Field: "lead_id", Reason: "want a string or a whole number"}
	}
	return str("lead_id", v, dst)
}

// build validates rc and hashes its identifiers.
func (rc *rawCapture) build(n pii.Normalizer) (store.IdentityCapture, error) {
	var c store.IdentityCapture
	if rc.subjectType == "" && rc.subjectSource == "" && rc.subjectID == "" {
		return c, &FieldError{Field: "subject", Reason: "required"}
	}
	typ := strings.ToLower(rc.subjectType)
	switch {
	case typ == "":
		return c, &FieldError{Field: "subject.type", Reason: "required"}
	case !subjectTypes[typ]:
		return c, &FieldError{Field: "subject.type", Reason: "want contact, lead, deal, opportunity, email or external"}
	case rc.subjectID == "":
		return c, &FieldError{Field: "subject.id", Reason: "required"}
	}
	c.Identifiers = pii.Set{}
	if typ == "email" {
		h, err := n.Hash(pii.Meta, pii.Email, rc.subjectID) // trim + lowercase
		if err != nil {
			return store.IdentityCapture{}, &FieldError{Field: "subject.id", Reason: "not a valid email address"}
		}
		c.SubjectKey = "email:" + h
		if rc.pii[pii.Email] == "" {
			rc.pii[pii.Email] = rc.subjectID
		}
	} else {
		if rc.subjectSource == "" {
			return store.IdentityCapture{}, &FieldError{Field: "subject.source", Reason: "required for subject type " + typ}
		}
		if strings.Contains(rc.subjectSource, ":") {
			return store.IdentityCapture{}, &FieldError{Field: "subject.source", Reason: "must not contain ':'"}
		}
		c.SubjectKey = crm.SubjectKey(rc.subjectSource, typ, rc.subjectID)
	}

	if rc.capturedAt == "" {
		return store.IdentityCapture{}, &FieldError{Field: "captured_at", Reason: "required"}
	}
	at, err := parseTime(rc.capturedAt)
	if err != nil {
		return store.IdentityCapture{}, &FieldError{Field: "captured_at", Reason: "not an RFC 3339 timestamp"}
	}
	c.CapturedAt = at

	for _, t := range ClickTypes {
		rcl, ok := rc.clicks[t]
		if !ok || rcl.id == "" {
			continue
		}
		field := "click_ids." + t
		if err := checkClickID(t, rcl.id); err != nil {
			return store.IdentityCapture{}, &FieldError{Field: field, Reason: err.Error()}
		}
		clickAt := at
		if rcl.clickedAt != "" {
			if clickAt, err = parseTime(rcl.clickedAt); err != nil {
				return store.IdentityCapture{}, &FieldError{Field: field + ".clicked_at", Reason: "not an RFC 3339 timestamp"}
			}
		}
		c.Clicks = append(c.Clicks, store.Click{Type: t, ID: rcl.id, At: clickAt})
	}
	if fbc := deriveFBC(c.Clicks); fbc != nil {
		c.Clicks = append(c.Clicks, *fbc)
	}

	for _, f := range []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State, pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID} {
		if err := n.Add(c.Identifiers, f, rc.pii[f]); err != nil {
			var pe *pii.Error
			if errors.As(err, &pe) {
				return store.IdentityCapture{}, &FieldError{Field: string(pe.Field), Reason: pe.Reason}
			}
			return store.IdentityCapture{}, &FieldError{Field: string(f), Reason: "cannot be normalized"}
		}
	}
	if len(c.Identifiers) == 0 {
		c.Identifiers = nil
	}

	if rc.ip != "" {
		ip, err := netip.ParseAddr(rc.ip)
		if err != nil {
			return store.IdentityCapture{}, &FieldError{Field: "ip", Reason: "not an IPv4 or IPv6 address"}
		}
		c.IP = ip.Unmap().String()
	}
	if !utf8.ValidString(rc.userAgent) || len(rc.userAgent) > 2048 {
		return store.IdentityCapture{}, &FieldError{Field: "user_agent", Reason: "not valid UTF-8 or longer than 2048 bytes"}
	}
	c.UserAgent = rc.userAgent
	if rc.leadID != "" {
		if len(rc.leadID) > 32 || strings.IndexFunc(rc.leadID, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
			return store.IdentityCapture{}, &FieldError{Field: "lead_id", Reason: "want digits only (a platform lead id)"}
		}
		c.LeadID = rc.leadID
	}

	if rc.consentPresent {
		ud, err := consentValue("consent.ad_user_data", rc.adUserData)
		if err != nil {
			return store.IdentityCapture{}, err
		}
		ap, err := consentValue("consent.ad_personalization", rc.adPersonalization)
		if err != nil {
			return store.IdentityCapture{}, err
		}
		if ud != "" || ap != "" {
			c.Consent = store.Consent{AdUserData: ud, AdPersonalization: ap, CapturedAt: at}
		}
	}
	return c, nil
}

func consentValue(field, v string) (string, error) {
	switch s := strings.ToLower(v); s {
	case "":
		return "", nil
	case store.ConsentGranted, store.ConsentDenied, store.ConsentUnknown:
		return s, nil
	}
	return "", &FieldError{Field: field, Reason: "want granted, denied or unknown"}
}

// parseTime parses RFC 3339 (with optional fractional seconds) into UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// checkClickID rejects IDs no platform would issue: too long, or with spaces or control
// characters; fbc and fbp must have Meta's "fb.<subdomain>.<ms>.<value>" shape.
func checkClickID(typ, id string) error {
	if len(id) > maxClickID {
		return errors.New("longer than 1024 characters")
	}
	if !utf8.ValidString(id) || strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("contains whitespace, control characters or invalid UTF-8")
	}
	if typ == "fbc" || typ == "fbp" {
		parts := strings.SplitN(id, ".", 4)
		if len(parts) != 4 || parts[0] != "fb" || !digits(parts[1]) || !digits(parts[2]) || parts[3] == "" {
			return errors.New("want Meta's fb.<subdomain index>.<unix ms>.<value> format")
		}
	}
	return nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// deriveFBC builds Meta's fbc from an fbclid when no fbc was captured: "fb.1.<ms>.<fbclid>",
// where 1 is the subdomain index of a registrable domain and <ms> the click time.
func deriveFBC(clicks []store.Click) *store.Click {
	var fbclid *store.Click
	for i := range clicks {
		switch clicks[i].Type {
		case "fbc":
			return nil
		case "fbclid":
			fbclid = &clicks[i]
		}
	}
	if fbclid == nil {
		return nil
	}
	return &store.Click{
		Type: "fbc",
		ID:   "fb.1." + strconv.FormatInt(fbclid.At.UnixMilli(), 10) + "." + fbclid.ID,
		At:   fbclid.At,
	}
}
