package pii

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/unicode/norm"
)

// Error says which field could not be normalized and why. It never carries the raw value.
type Error struct {
	Field  Field
	Reason string
}

func (e *Error) Error() string { return string(e.Field) + ": " + e.Reason }

// Normalizer turns raw personal identifiers into the normalized form of each rule. The zero
// value works, but phones without a country code are then rejected. It holds no state and
// is safe for concurrent use.
type Normalizer struct {
	// DefaultRegion is the ISO 3166-1 alpha-2 region (e.g. "US") assumed for phone numbers
	// written without a country code.
	DefaultRegion string
}

// IsSHA256Hex reports whether s is exactly 64 lowercase hexadecimal characters, the form
// every platform takes a SHA-256 in.
func IsSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// prehashed returns the lowercase hex when raw (trimmed, any case) is already a SHA-256 hex.
func prehashed(raw string) (string, bool) {
	s := strings.TrimSpace(raw)
	if len(s) != 64 { // most values: no lowercase copy
		return "", false
	}
	s = strings.ToLower(s)
	return s, IsSHA256Hex(s)
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	var x [2 * sha256.Size]byte
	hex.Encode(x[:], h[:])
	return string(x[:])
}

// Normalize returns the form rule (a Key* constant or CountryCodeKey; the rule's field is
// its part before "/") gives raw before hashing. "" means absent: a value that is empty
// after normalization is never hashed. A value that already is a SHA-256 hex (64 hex
// characters, any case, surrounding space ignored) is returned lowercased and otherwise
// unchanged, so nothing is hashed twice. Errors are *Error and never contain the raw value.
func (n Normalizer) Normalize(rule string, raw string) (string, error) {
	f, err := ruleField(rule)
	if err != nil {
		return "", err
	}
	if h, ok := prehashed(raw); ok {
		return h, nil
	}
	fs, err := n.forms(f, raw)
	if err != nil || fs == nil {
		return "", err
	}
	return fs.form(f, rule), nil
}

// Hash returns the SHA-256 lowercase hex of Normalize's result, the input itself when it
// already is a SHA-256 hex, and "" when the value is absent.
func (n Normalizer) Hash(rule string, raw string) (string, error) {
	v, err := n.Normalize(rule, raw)
	if err != nil || v == "" {
		return "", err
	}
	if IsSHA256Hex(v) {
		return v, nil
	}
	return sum(v), nil
}

// Add stores in s the hash of every distinct platform form of field f (see the package doc
// for the keys), and for a country also its clear ISO code under "country/code". Every key
// of the field is written each time, so a later value replaces an earlier one completely.
// A pre-hashed value is stored under every key of the field. An absent value adds nothing.
// s must be non-nil.
func (n Normalizer) Add(s Set, f Field, raw string) error {
	keys := fieldKeys(f)
	if keys == nil {
		return &Error{Field: f, Reason: "unknown field"}
	}
	if h, ok := prehashed(raw); ok {
		for _, k := range keys {
			s[k] = h
		}
		return nil
	}
	fs, err := n.forms(f, raw)
	if err != nil || fs == nil {
		return err
	}
	switch f {
	case Email:
		s[KeyEmail] = sum(fs.base)
		s[KeyEmailCanonical] = sum(fs.variant[Email])
	case Phone:
		s[KeyPhoneE164] = sum(fs.base)
		s[KeyPhoneDigits] = sum(fs.phoneDigits)
	case FirstName:
		s[KeyFirstName] = sum(fs.base)
		s[KeyFirstNameNoTitle] = sum(fs.variant[f])
	case LastName:
		s[KeyLastName] = sum(fs.base)
		s[KeyLastNameNoSuffix] = sum(fs.variant[f])
	case Country:
		s[KeyCountry] = sum(fs.base)
		s[CountryCodeKey] = fs.variant[Country]
	default:
		s[string(f)] = sum(fs.base)
	}
	return nil
}

// CountryCodeKey is the Set key holding the subject's country as a clear ISO 3166-1
// alpha-2 code in upper case ("US"). A country code alone does not identify anyone, and
// an address match may want it unhashed (a region code); it is the one clear value a Set
// holds. It is also the rule of that clear form (Normalize).
const CountryCodeKey = "country/code"

// fieldKeys lists the Set keys Add writes for f.
func fieldKeys(f Field) []string {
	switch f {
	case Email:
		return []string{KeyEmail, KeyEmailCanonical}
	case Phone:
		return []string{KeyPhoneE164, KeyPhoneDigits}
	case FirstName:
		return []string{KeyFirstName, KeyFirstNameNoTitle}
	case LastName:
		return []string{KeyLastName, KeyLastNameNoSuffix}
	case City, State, Zip, Country, DateOfBirth, Gender, ExternalID:
		return []string{string(f)}
	}
	return nil
}

// CountryCode returns the clear ISO 3166-1 alpha-2 country code ("US"), or "".
func (s Set) CountryCode() string { return s[CountryCodeKey] }

// ruleField returns the field rule normalizes, refusing a rule that is not one.
func ruleField(rule string) (Field, error) {
	name, _, _ := strings.Cut(rule, "/")
	f := Field(name)
	keys := fieldKeys(f)
	if keys == nil {
		return f, &Error{Field: f, Reason: "unknown field"}
	}
	if rule == CountryCodeKey || slices.Contains(keys, rule) {
		return f, nil
	}
	return f, &Error{Field: f, Reason: "unknown rule " + rule}
}

// forms holds the normalized forms of one value: base is the form of the rule named by
// the field alone (KeyEmail, KeyPhoneE164, KeyFirstName, ...), variant the field's "/"
// rule where one exists (KeyEmailCanonical, KeyFirstNameNoTitle, KeyLastNameNoSuffix,
// CountryCodeKey), phoneDigits KeyPhoneDigits. nil forms means absent.
type forms struct {
	base        string
	variant     map[Field]string
	phoneDigits string
}

// form is the form rule (of field f) gives.
func (fs *forms) form(f Field, rule string) string {
	switch rule {
	case KeyPhoneDigits:
		return fs.phoneDigits
	case KeyEmailCanonical, KeyFirstNameNoTitle, KeyLastNameNoSuffix, CountryCodeKey:
		if v, ok := fs.variant[f]; ok {
			return v
		}
	}
	return fs.base
}

func (n Normalizer) forms(f Field, raw string) (*forms, error) {
	raw = norm.NFC.String(raw)
	switch f {
	case Email:
		return email(raw)
	case Phone:
		return n.phone(raw)
	case FirstName, LastName:
		return name(f, raw), nil
	case City:
		return single(letters(raw, false)), nil
	case State:
		return state(raw), nil
	case Zip:
		return zip(raw), nil
	case Country:
		return country(raw)
	case DateOfBirth:
		return dateOfBirth(raw)
	case Gender:
		return gender(raw)
	case ExternalID:
		return single(strings.TrimSpace(raw)), nil
	}
	return nil, &Error{Field: f, Reason: "unknown field"}
}

func single(v string) *forms {
	if v == "" {
		return nil
	}
	return &forms{base: v}
}

// email: trim + lowercase (KeyEmail); the canonical form (KeyEmailCanonical) also drops
// all whitespace and, for gmail.com and googlemail.com only, the dots and the +suffix of
// the local part.
func email(raw string) (*forms, error) {
	base := strings.ToLower(strings.TrimSpace(raw))
	if base == "" {
		return nil, nil
	}
	g := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, base)
	at := strings.LastIndexByte(g, '@')
	if at <= 0 || at == len(g)-1 || strings.Count(g, "@") != 1 || !strings.Contains(g[at+1:], ".") {
		return nil, &Error{Field: Email, Reason: "not a valid email address"}
	}
	local, domain := g[:at], g[at+1:]
	if domain == "gmail.com" || domain == "googlemail.com" {
		if i := strings.IndexByte(local, '+'); i >= 0 {
			local = local[:i]
		}
		local = strings.ReplaceAll(local, ".", "")
		if local == "" {
			return nil, &Error{Field: Email, Reason: "not a valid email address"}
		}
	}
	return &forms{base: base, variant: map[Field]string{Email: local + "@" + domain}}, nil
}

// phone parses to E.164 (+ and digits), DefaultRegion for numbers without country code.
// Only a valid number (libphonenumber's IsValidNumber: a real number range of its country,
// not merely a possible length) is kept; anything else is an error, so it is never hashed
// and sent as someone else's number. A number written with the "00" international prefix
// ("00 81 3-9307-0896") that the region's own rules do not read as a valid number (JP
// dials abroad with 010, so there it would be a national number) is read as international.
func (n Normalizer) phone(raw string) (*forms, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, nil
	}
	hasDigit := strings.IndexFunc(s, unicode.IsDigit) >= 0
	if !hasDigit {
		return nil, &Error{Field: Phone, Reason: "not a valid phone number"}
	}
	region := strings.ToUpper(n.DefaultRegion)
	if region == "" {
		region = "ZZ" // unknown: only numbers with a country code parse
	}
	// "(+1)2133734253": a country code in parentheses is still a country code.
	s = strings.TrimLeft(s, "( ")
	compact := compactPhone(s)
	num, ok := parseValid(compact, region)
	if !ok && strings.HasPrefix(compact, "00") && !strings.HasPrefix(compact, "000") {
		num, ok = parseValid("+"+compact[2:], region)
	}
	if !ok {
		reason := "not a valid phone number"
		if region != "ZZ" {
			reason += " for region " + region
		} else {
			reason += " (no country code and no default region)"
		}
		return nil, &Error{Field: Phone, Reason: reason}
	}
	e164 := phonenumbers.Format(num, phonenumbers.E164)
	return &forms{base: e164, phoneDigits: strings.TrimPrefix(e164, "+")}, nil
}

// parseValid parses s under region and reports whether it is a valid number of a known
// country.
func parseValid(s, region string) (*phonenumbers.PhoneNumber, bool) {
	if num, ok := parseE164(s); ok {
		return num, true
	}
	num, err := phonenumbers.Parse(s, region)
	if err != nil {
		return nil, false
	}
	main := phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode()))
	if main == "ZZ" {
		return nil, false
	}
	if main == region && mainRegionFirst(region) && phonenumbers.IsValidNumberForRegion(num, region) {
		// IsValidNumber finds the number's region by trying the calling code's regions in
		// order, the main one first, and then validates against it: a number valid for the
		// main region (when it claims no leading digits) is valid, with half the pattern
		// matching (for +1, it would run the US patterns twice).
		return num, true
	}
	return num, phonenumbers.IsValidNumber(num)
}

// parseE164 reads a number written in E.164 ("+14152001234", what compactPhone makes of
// "+1 (415) 200-1234") without Parse's generic patterns (its extension pattern alone, tried
// at every position, is a fifth of an identity's decoding), and reports whether it is a
// valid number of its calling code's main region. false means only "not answered here":
// the caller parses in full. It answers only where Parse provably reads the digits as they
// stand: a known geographic calling code (the first 1-3 digits naming one, as Parse
// extracts it), a national number of 2-17 digits not starting with 0 (Italian leading
// zeros and trunk zeros written after the country code take the full path), and a region
// whose national prefix for parsing is plain digits, without a transform rule, that the
// national number does not start with (so Parse strips nothing; in today's metadata the
// leading-0 condition already covers every prefix that a valid number can start with, this
// one keeps it so if the metadata changes). TestPhoneFastPathAgrees compares it with Parse
// on every region's examples and on variants built to hit each condition.
func parseE164(s string) (*phonenumbers.PhoneNumber, bool) {
	if len(s) < 4 || len(s) > 21 || s[0] != '+' || s[1] == '0' {
		return nil, false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return nil, false
		}
	}
	cc, region := 0, "ZZ"
	for i := 2; i <= 4 && i < len(s); i++ {
		code := 0
		for _, c := range s[1:i] {
			code = code*10 + int(c-'0')
		}
		if r := phonenumbers.GetRegionCodeForCountryCode(code); r != "ZZ" {
			cc, region = code, r
			break
		}
	}
	if region == "ZZ" || region == "001" { // unknown, or non-geographic (+800, +882, ...)
		return nil, false
	}
	national := s[1+len(strconv.Itoa(cc)):]
	if len(national) < 2 || len(national) > 17 || national[0] == '0' {
		return nil, false
	}
	prefix, plain := nationalPrefix(region)
	if !plain || prefix != "" && strings.HasPrefix(national, prefix) {
		return nil, false
	}
	nsn, err := strconv.ParseUint(national, 10, 64)
	if err != nil {
		return nil, false
	}
	code := int32(cc)
	num := &phonenumbers.PhoneNumber{CountryCode: &code, NationalNumber: &nsn}
	if !mainRegionFirst(region) || !phonenumbers.IsValidNumberForRegion(num, region) {
		return nil, false
	}
	return num, true
}

// nationalPrefix is region's national prefix for parsing, and whether Parse uses it as
// plain digits: no pattern and no transform rule (US: "1", GB: "0"; AR's pattern, which
// rewrites "15" mobile numbers, is not plain).
func nationalPrefix(region string) (prefix string, plain bool) {
	prefixesOnce.Do(func() {
		prefixes = map[string]string{}
		coll, err := phonenumbers.MetadataCollection()
		if err != nil {
			return // every region is then "not plain": the full parse answers
		}
		for _, m := range coll.GetMetadata() {
			p := m.GetNationalPrefixForParsing()
			if m.GetNationalPrefixTransformRule() != "" || strings.Trim(p, "0123456789") != "" {
				continue
			}
			prefixes[m.GetId()] = p
		}
	})
	prefix, plain = prefixes[region]
	return prefix, plain
}

var (
	prefixesOnce sync.Once
	prefixes     map[string]string // region → plain national prefix for parsing
)

// mainRegionFirst reports whether region is the first region IsValidNumber tries for its
// calling code (its main region: US for +1, GB for +44). Main regions claim no leading
// digits in the metadata (TestPhoneFastPathAgrees checks every region's examples), so
// IsValidNumberForRegion(num, region) true implies IsValidNumber(num) true.
func mainRegionFirst(region string) bool {
	v, ok := mainFirst.Load(region)
	if !ok {
		regions := phonenumbers.GetRegionCodesForCountryCode(phonenumbers.GetCountryCodeForRegion(region))
		v = len(regions) > 0 && regions[0] == region
		mainFirst.Store(region, v)
	}
	return v.(bool)
}

// mainFirst caches mainRegionFirst per region (a handful of default regions at most).
var mainFirst sync.Map

// compactPhone drops the spaces, dashes, dots, slashes and parentheses of a number written
// with nothing but those, digits and '+': the parser ignores them anyway, and its
// extension pattern, tried at every position, costs ~30% less on the shorter string.
// Anything else (letters, "#", ",", ";", "~", other scripts: an extension or a vanity
// number may hide there) is returned unchanged for the parser to read in full.
func compactPhone(s string) string {
	drop := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9' || c == '+':
		case c == ' ' || c == '-' || c == '.' || c == '/' || c == '(' || c == ')':
			drop++
		default:
			return s
		}
	}
	if drop == 0 {
		return s
	}
	b := make([]byte, 0, len(s)-drop)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= '0' && c <= '9' || c == '+' {
			b = append(b, c)
		}
	}
	return string(b)
}

// name: the base form is lowercase, no punctuation or symbols, single spaces. The variant
// is lowercase, trimmed, inner spaces collapsed, without honorific prefixes (first name,
// KeyFirstNameNoTitle, punctuation kept) or generational/degree suffixes (last name,
// KeyLastNameNoSuffix, punctuation dropped).
func name(f Field, raw string) *forms {
	base := collapse(strings.ToLower(stripPunct(raw)))
	if base == "" {
		return nil
	}
	var v string
	if f == FirstName {
		v = collapse(strings.ToLower(raw))
		v = dropAffix(v, true)
	} else {
		v = dropAffix(base, false)
	}
	if v == "" {
		v = base
	}
	return &forms{base: base, variant: map[Field]string{f: v}}
}

var (
	namePrefixes = map[string]bool{"mr": true, "mrs": true, "ms": true, "miss": true, "mx": true, "dr": true, "prof": true}
	nameSuffixes = map[string]bool{"jr": true, "sr": true, "ii": true, "iii": true, "iv": true, "phd": true, "md": true, "esq": true}
)

// dropAffix removes one honorific prefix (first names) or trailing suffix (last names) when
// the name has more than one word.
func dropAffix(s string, prefix bool) string {
	words := strings.Fields(s)
	if len(words) < 2 {
		return s
	}
	if prefix {
		if namePrefixes[strings.TrimSuffix(words[0], ".")] {
			words = words[1:]
		}
	} else if nameSuffixes[strings.Trim(words[len(words)-1], ".,")] {
		words = words[:len(words)-1]
	}
	return strings.TrimRight(strings.Join(words, " "), ",")
}

func stripPunct(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case unicode.IsLetter(r), unicode.IsMark(r), unicode.IsDigit(r):
			return r
		case unicode.IsSpace(r):
			return ' '
		}
		return -1
	}, s)
}

func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

// letters keeps only letters (and combining marks), lowercased; digits too when keepDigits.
func letters(s string, keepDigits bool) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsMark(r) || (keepDigits && unicode.IsDigit(r)) {
			return unicode.ToLower(r)
		}
		return -1
	}, s)
}
