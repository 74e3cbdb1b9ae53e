package pii

import (
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/language"
	"golang.org/x/text/language/display"
)

// usStates maps US state and territory names (letters only, lowercase) to their 2-letter
// ANSI code, lowercase.
var usStates = map[string]string{
	"alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
	"colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
	"florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
	"indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
	"maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
	"mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
	"newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
	"northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
	"pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
	"tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
	"washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
	"puertorico": "pr", "guam": "gu", "americansamoa": "as", "virginislands": "vi",
	"northernmarianaislands": "mp",
}

// state: lowercase letters only (no punctuation, spaces or digits); a US state's full name
// becomes its 2-letter code.
func state(raw string) *forms {
	s := letters(raw, false)
	if code, ok := usStates[s]; ok {
		s = code
	}
	return single(s)
}

var zipPlus4 = regexp.MustCompile(`^(\d{5})[\s-]?\d{4}$`)

// zip: lowercase without spaces or dashes; a US ZIP+4 keeps its first 5 digits.
func zip(raw string) *forms {
	s := strings.TrimSpace(raw)
	if m := zipPlus4.FindStringSubmatch(s); m != nil {
		return single(m[1])
	}
	return single(letters(s, true))
}

// countryNames maps lowercase English country names (letters only) and common aliases to
// ISO 3166-1 alpha-2 codes. Built once, on first use.
var countryNames = sync.OnceValue(func() map[string]string {
	m := map[string]string{
		"uk": "GB", "greatbritain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
		"northernireland": "GB", "unitedstatesofamerica": "US", "america": "US",
		"holland": "NL", "southkorea": "KR", "korea": "KR", "russia": "RU",
		"czechia": "CZ", "czechrepublic": "CZ", "turkey": "TR", "turkiye": "TR",
	}
	namer := display.English.Regions()
	for code := range phonenumbers.GetSupportedRegions() {
		r, err := language.ParseRegion(code)
		if err != nil {
			continue
		}
		if name := letters(namer.Name(r), false); name != "" {
			if _, dup := m[name]; !dup {
				m[name] = code
			}
		}
	}
	return m
})

// country resolves a 2- or 3-letter ISO code or an English country name to the alpha-2
// code: lowercase for the hash (KeyCountry), upper case for the clear code (CountryCodeKey).
func country(raw string) (*forms, error) {
	s := letters(raw, false)
	if s == "" {
		return nil, nil
	}
	code, ok := countryNames()[s]
	if !ok && (len(s) == 2 || len(s) == 3) {
		if r, err := language.ParseRegion(s); err == nil && r.IsCountry() {
			code, ok = r.String(), true
		}
	}
	if !ok || len(code) != 2 {
		return nil, &Error{Field: Country, Reason: "not an ISO 3166-1 country code or English country name"}
	}
	return &forms{base: strings.ToLower(code), variant: map[Field]string{Country: code}}, nil
}

var dobLayouts = []string{"2006-01-02", "20060102", "2006/01/02", "2006.01.02"}

// dateOfBirth gives YYYYMMDD. Accepted: YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, M/D/YYYY (US order;
// D/M/YYYY when the first part is over 12) and D.M.YYYY.
func dateOfBirth(raw string) (*forms, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, nil
	}
	bad := &Error{Field: DateOfBirth, Reason: "not a date (want YYYY-MM-DD, YYYYMMDD, M/D/YYYY or D.M.YYYY)"}
	for _, l := range dobLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return dob(t)
		}
	}
	if strings.Count(s, "/") == 2 {
		if t, err := time.Parse("1/2/2006", s); err == nil {
			return dob(t)
		}
		if t, err := time.Parse("2/1/2006", s); err == nil {
			return dob(t)
		}
		return nil, bad
	}
	if strings.Count(s, ".") == 2 {
		if t, err := time.Parse("2.1.2006", s); err == nil {
			return dob(t)
		}
	}
	return nil, bad
}

func dob(t time.Time) (*forms, error) {
	if t.Year() < 1900 || t.After(time.Now()) {
		return nil, &Error{Field: DateOfBirth, Reason: "date out of range"}
	}
	return single(t.Format("20060102")), nil
}

// gender maps common spellings to "f" / "m".
func gender(raw string) (*forms, error) {
	switch letters(raw, false) {
	case "":
		return nil, nil
	case "f", "female", "woman", "w":
		return single("f"), nil
	case "m", "male", "man":
		return single("m"), nil
	}
	return nil, &Error{Field: Gender, Reason: "not a recognised gender (want f or m)"}
}
