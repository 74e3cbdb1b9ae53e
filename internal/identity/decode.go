package identity

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/valyala/fastjson"

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
// identifiers are normalized and hashed with n and dropped. Errors are *FieldError. It is
// safe for concurrent use.
//
// The payload must be exactly one JSON object (RFC 8259; surrounding whitespace allowed,
// anything else after it is an error, as is nesting deeper than fastjson.MaxDepth). Keys
// are case-sensitive; a repeated key's last value wins; members are checked in sorted key
// order, so the error reported first does not depend on key order. Strings decode as
// encoding/json decodes them: an invalid UTF-8 byte or an unpaired surrogate escape
// becomes U+FFFD.
func Decode(payload []byte, n pii.Normalizer) (store.IdentityCapture, error) {
	if len(payload) > MaxPayload {
		return store.IdentityCapture{}, &FieldError{Field: "payload", Reason: "larger than 1 MiB"}
	}
	rc := rawCapture{clicks: make(map[string]rawClick, 4), pii: make(map[pii.Field]string, 12)}
	if err := decodeJSON(payload, &rc); err != nil {
		return store.IdentityCapture{}, err
	}
	return rc.build(n)
}

// parsers serves Decode, which runs on several goroutines at once.
var parsers fastjson.ParserPool

// maxPooledPayload: a parser that parsed a larger payload is dropped instead of pooled, so
// one large capture does not keep a megabyte buffer alive per pooled parser.
const maxPooledPayload = 64 << 10

// decodeJSON parses payload into rc. Every string it stores is a copy: nothing in rc refers
// to the parser's memory once it returns.
func decodeJSON(payload []byte, rc *rawCapture) error {
	payload, ok := scanStrings(payload)
	if !ok {
		return &FieldError{Field: "payload", Reason: "not a JSON object"}
	}
	p := parsers.Get()
	defer func() {
		if len(payload) <= maxPooledPayload {
			parsers.Put(p)
		}
	}()
	// Parse is lenient (NaN, unknown escapes, raw control characters); Validate is strict
	// RFC 8259 like encoding/json, given the control characters scanStrings has caught.
	// Validate runs second: Parse has already bounded the nesting it would recurse into.
	top, err := p.ParseBytes(payload)
	if err != nil || top.Type() != fastjson.TypeObject || fastjson.ValidateBytes(payload) != nil {
		return &FieldError{Field: "payload", Reason: "not a JSON object"}
	}
	o, _ := top.Object()
	mb := make(memberBuf, 0, 32)
	for _, m := range mb.members(o) {
		k, v := m.key, m.v
		if v.Type() == fastjson.TypeNull {
			continue
		}
		var err error
		switch k {
		case "subject":
			err = decodeSubject(&mb, v, rc)
		case "captured_at":
			err = str(k, "", v, &rc.capturedAt)
		case "click_ids":
			err = decodeClicks(&mb, v, rc)
		case "ip":
			err = str(k, "", v, &rc.ip)
		case "user_agent":
			err = str(k, "", v, &rc.userAgent)
		case "lead_id":
			err = leadID(v, &rc.leadID)
		case "consent":
			err = decodeConsent(&mb, v, rc)
		default:
			f, ok := piiKeys[k]
			if !ok {
				return &FieldError{Field: keyName(k), Reason: "unknown field"}
			}
			var s string
			if err = str(k, "", v, &s); err == nil {
				err = rc.setPII(k, f, s)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
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

// member is one key and value of a parsed object; v lives as long as the parser's result.
type member struct {
	key string
	v   *fastjson.Value
}

// knownKeys interns every key Decode understands, so matching a key costs no allocation.
var knownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"subject", "captured_at", "click_ids", "ip", "user_agent", "lead_id", "consent",
		"type", "source", "id", "clicked_at", "ad_user_data", "ad_personalization"} {
		m[k] = k
	}
	for k := range piiKeys {
		m[k] = k
	}
	for _, k := range ClickTypes {
		m[k] = k
	}
	return m
}()

// memberBuf holds the members of every object one Decode visits.
type memberBuf []member

// members appends o's members to mb and returns them sorted by key, keeping only the last
// of repeated keys (what encoding/json does decoding into a map). Keys are unescaped, with
// invalid UTF-8 bytes replaced as in strings. A slice returned earlier stays valid.
func (mb *memberBuf) members(o *fastjson.Object) []member {
	start := len(*mb)
	o.Visit(func(k []byte, v *fastjson.Value) {
		key, ok := knownKeys[string(k)]
		if !ok {
			key = string(validUTF8(k))
		}
		*mb = append(*mb, member{key: key, v: v})
	})
	ms := (*mb)[start:]
	slices.SortStableFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	last := ms[:0]
	for i := range ms {
		if i+1 < len(ms) && ms[i+1].key == ms[i].key {
			continue
		}
		last = append(last, ms[i])
	}
	*mb = (*mb)[:start+len(last)]
	return last
}

// scanStrings walks payload's strings for what fastjson gets wrong next to encoding/json.
// It reports false when a string holds a raw control character (fastjson.Validate misses
// one that comes before an escape in the same string). It rewrites every \u escape of a
// UTF-16 surrogate that is not half of a valid pair to \ufffd: encoding/json decodes such
// an escape to U+FFFD, fastjson would keep it as text or swallow the escape after it. The
// rewrite keeps the length and the JSON validity; payload is copied only when something is
// rewritten. On invalid JSON the walk may lose track of where strings are, which is harmless:
// fastjson then rejects the payload anyway.
func scanStrings(payload []byte) ([]byte, bool) {
	out, copied := payload, false
	for i := 0; ; i++ { // i++ steps past a string's closing quote
		j := bytes.IndexByte(payload[i:], '"')
		if j < 0 {
			return out, true
		}
		for i += j + 1; i < len(payload) && payload[i] != '"'; i++ {
			c := payload[i]
			if c < 0x20 {
				return nil, false
			}
			if c != '\\' {
				continue
			}
			r := escapedRune(payload[i:])
			if r < 0 || !utf16.IsSurrogate(r) {
				i++ // the escaped byte; a \u escape's hex digits need no care
				continue
			}
			if r < 0xdc00 {
				if r2 := escapedRune(payload[i+6:]); r2 >= 0xdc00 && r2 <= 0xdfff {
					i += 11 // a valid pair
					continue
				}
			}
			if !copied {
				out, copied = bytes.Clone(payload), true
			}
			copy(out[i+2:i+6], "fffd")
			i += 5
		}
		if i >= len(payload) {
			return out, true
		}
	}
}

// escapedRune returns the code unit of the \uXXXX escape that b starts with, or -1.
func escapedRune(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// validUTF8 returns b with each byte that does not belong to a valid UTF-8 sequence replaced
// by U+FFFD, as encoding/json does when it decodes a string; b itself when it is valid.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

// jsonKind names the JSON type of v for error messages (never its content).
func jsonKind(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeString:
		return "a string"
	case fastjson.TypeObject:
		return "an object"
	case fastjson.TypeArray:
		return "an array"
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return "a boolean"
	case fastjson.TypeNull:
		return "null"
	}
	return "a number"
}

// str decodes a JSON string, trimmed; numbers are accepted for IDs written as numbers by some
// relays only where the caller says so (leadID, subject.id), never here. An error names the
// field field+sub (joined only then).
func str(field, sub string, v *fastjson.Value, dst *string) error {
	b, err := v.StringBytes()
	if err != nil {
		return &FieldError{Field: field + sub, Reason: "want a string, got " + jsonKind(v)}
	}
	*dst = string(bytes.TrimSpace(validUTF8(b)))
	return nil
}

// number returns a JSON number exactly as written.
func number(v *fastjson.Value) string {
	var buf [32]byte
	return string(v.MarshalTo(buf[:0]))
}

func object(mb *memberBuf, field string, v *fastjson.Value) ([]member, error) {
	o, err := v.Object()
	if err != nil {
		return nil, &FieldError{Field: field, Reason: "want an object, got " + jsonKind(v)}
	}
	return mb.members(o), nil
}

func decodeSubject(mb *memberBuf, v *fastjson.Value, rc *rawCapture) error {
	ms, err := object(mb, "subject", v)
	if err != nil {
		return err
	}
	for _, m := range ms {
		k, mv := m.key, m.v
		if mv.Type() == fastjson.TypeNull {
			continue
		}
		var dst *string
		switch k {
		case "type":
			dst = &rc.subjectType
		case "source":
			dst = &rc.subjectSource
		case "id":
			if mv.Type() == fastjson.TypeNumber {
				// Numeric CRM ids (HubSpot) keep their digits exactly.
				rc.subjectID = number(mv)
				continue
			}
			dst = &rc.subjectID
		default:
			return &FieldError{Field: "subject." + keyName(k), Reason: "unknown field"}
		}
		if err := str("subject.", k, mv, dst); err != nil {
			return err
		}
	}
	return nil
}

// clickFields names each click ID type's field in errors.
var clickFields = func() map[string]string {
	m := map[string]string{}
	for _, t := range ClickTypes {
		m[t] = "click_ids." + t
	}
	return m
}()

func decodeClicks(mb *memberBuf, v *fastjson.Value, rc *rawCapture) error {
	ms, err := object(mb, "click_ids", v)
	if err != nil {
		return err
	}
	for _, m := range ms {
		t, cv := m.key, m.v
		field, ok := clickFields[t]
		if !ok {
			return &FieldError{Field: "click_ids." + keyName(t), Reason: "unknown click ID type (want one of " + strings.Join(ClickTypes, ", ") + ")"}
		}
		var c rawClick
		switch cv.Type() {
		case fastjson.TypeNull:
			continue
		case fastjson.TypeString:
			if err := str(field, "", cv, &c.id); err != nil {
				return err
			}
		case fastjson.TypeObject:
			o, _ := object(mb, field, cv)
			for _, om := range o {
				if om.v.Type() == fastjson.TypeNull {
					continue
				}
				switch om.key {
				case "id":
					err = str(field, ".id", om.v, &c.id)
				case "clicked_at":
					err = str(field, ".clicked_at", om.v, &c.clickedAt)
				default:
					err = &FieldError{Field: field + "." + keyName(om.key), Reason: "unknown field"}
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

func decodeConsent(mb *memberBuf, v *fastjson.Value, rc *rawCapture) error {
	ms, err := object(mb, "consent", v)
	if err != nil {
		return err
	}
	rc.consentPresent = true
	for _, m := range ms {
		if m.v.Type() == fastjson.TypeNull {
			continue
		}
		switch m.key {
		case "ad_user_data":
			err = str("consent.", m.key, m.v, &rc.adUserData)
		case "ad_personalization":
			err = str("consent.", m.key, m.v, &rc.adPersonalization)
		default:
			err = &FieldError{Field: "consent." + keyName(m.key), Reason: "unknown field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// leadID accepts a string or an integer (Meta's leadgen_id arrives as either).
func leadID(v *fastjson.Value, dst *string) error {
	if v.Type() == fastjson.TypeNumber {
		n := number(v)
		if _, err := strconv.ParseUint(n, 10, 64); err == nil {
			*dst = n
			return nil
		}
		return &FieldError{Field: "lead_id", Reason: "want a string or a whole number"}
	}
	return str("lead_id", "", v, dst)
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
		h, err := n.Hash(pii.KeyEmail, rc.subjectID) // trim + lowercase
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
	if !plainASCII(id) && (!utf8.ValidString(id) || strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0) {
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

// plainASCII reports whether s is printable ASCII without spaces (every click ID a
// platform issues), which needs no rune-by-rune check.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
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
