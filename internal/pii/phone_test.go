package pii

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"
	"github.com/stretchr/testify/require"
)

// compactPhone must never change what the parser makes of a number: for numbers written
// every which way, in several regions, parsing the compact form and the original gives the
// same E.164 number, or both are refused.
func TestCompactPhoneParsesLikeTheOriginal(t *testing.T) {
	t.Parallel()
	// What phone() keeps of a parse: the E.164 number, or a refusal (it refuses a parse
	// error and an invalid number alike, with the same message).
	outcome := func(s, region string) string {
		num, err := phonenumbers.Parse(s, region)
		if err != nil || !phonenumbers.IsValidNumber(num) ||
			phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode())) == "ZZ" {
			return "refused"
		}
		return phonenumbers.Format(num, phonenumbers.E164)
	}
	fixed := []string{"(650) 555-1212", "+1 (415) 200-1234", "650.555.1212", "+44 20 7946 0958", "+49 (0)30 1234567",
		"0049 30 1234567", "011 44 20 7946 0958", "020 7946 0958", "+33 1 23 45 67 89", "06 12 34 56 78",
		"+91 98765 43210", "(+1)2133734253", "+1)2133734253", "1-2", "12", "1", "+", "++1 650 555 1212", "+-1 650",
		"650/555/1212", "650 555 1212 /", "(0) 30 1234567", "+55 (11) 91234-5678", "03-1234-5678", "+81 3 1234 5678",
		"1 800 555 0100", "1-800-FLOWERS", "650 555 1212 x12", "650 555 1212 #12", "650-555-1212 ext. 7",
		"tel:+1-650-555-1212", "650 555 1212;ext=3", "650 555 1212,,3", "+1 650 555 1212 - 503#", "  ", "()", "--1--"}
	r := rand.New(rand.NewPCG(7, 11))
	seps := []string{"", "", " ", "-", ".", "/", "(", ")", "  ", " - "}
	var random []string
	for range 3000 {
		var b strings.Builder
		if r.IntN(3) == 0 {
			b.WriteString("+")
		}
		for range r.IntN(14) + 1 {
			b.WriteByte(byte('0' + r.IntN(10)))
			b.WriteString(seps[r.IntN(len(seps))])
		}
		random = append(random, b.String())
	}
	for _, region := range []string{"US", "GB", "DE", "FR", "IN", "BR", "JP", "ZZ"} {
		for _, s := range append(fixed, random...) {
			require.Equal(t, outcome(s, region), outcome(compactPhone(s), region), "%q in %s (compact %q)", s, region, compactPhone(s))
		}
	}
	require.Equal(t, "+16505551212", compactPhone("+1 (650) 555-1212"))
	require.Equal(t, "650 555 1212 x12", compactPhone("650 555 1212 x12"), "a possible extension is left to the parser")
}

// TestPhoneValidity: only a valid number is hashed; the "00" international prefix is read
// as international where the region's own reading is not a valid number; refusals name
// the field, never the value.
func TestPhoneValidity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, region, raw string
		want              string // E.164; "" = refused
	}{
		{"00 prefix under JP (which dials abroad with 010)", "JP", "00 81 3-9307-0896", "+81393070896"},
		{"010 prefix under JP", "JP", "010 81 3-9307-0896", "+81393070896"},
		{"national JP number", "JP", "03-9307-0896", "+81393070896"},
		{"00 prefix under DE (its own prefix)", "DE", "00 44 20 7946 0958", "+442079460958"},
		{"00 prefix under US (which dials abroad with 011)", "US", "0044 20 7946 0958", "+442079460958"},
		{"00 prefix with no default region", "", "0033 1 23 45 67 89", "+33123456789"},
		{"US number", "US", "(415) 200-1234", "+14152001234"},
		{"possible length, no real range (US area code 099)", "US", "(099) 555-1212", ""},
		{"unassigned country code", "US", "+999 1234 5678", ""},
		{"too short", "GB", "020 7946", ""},
		{"000 is no international prefix", "JP", "000 81 3-9307-0896", ""},
		{"00 form that is valid nowhere", "JP", "00 81 12", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := Normalizer{DefaultRegion: tt.region}
			got, err := n.Normalize(KeyPhoneE164, tt.raw)
			if tt.want == "" {
				var pe *Error
				require.ErrorAs(t, err, &pe)
				require.Equal(t, Phone, pe.Field)
				require.NotContains(t, err.Error(), compactPhone(tt.raw))
				s := Set{}
				require.Error(t, n.Add(s, Phone, tt.raw))
				require.Empty(t, s, "a refused number is never hashed")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func BenchmarkPhone(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	for b.Loop() {
		if _, err := n.phone("+1 (415) 200-1234"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPhoneFastPathAgrees checks parseValid's shortcuts (parseE164, and IsValidNumberForRegion
// for the main region) against the library's own Parse and IsValidNumber on every region's
// example numbers of every type, each parsed under its region, its calling code's main
// region and US, on variants with a digit changed, added or dropped, with the region's national
// prefix or a 0 written after the country code, and on random "+" numbers: both must keep
// the same E.164 number, or both refuse.
func TestPhoneFastPathAgrees(t *testing.T) {
	t.Parallel()
	reference := func(raw, under string) string {
		num, err := phonenumbers.Parse(raw, under)
		if err != nil || phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode())) == "ZZ" || !phonenumbers.IsValidNumber(num) {
			return "refused"
		}
		return phonenumbers.Format(num, phonenumbers.E164)
	}
	got := func(raw, under string) string {
		num, ok := parseValid(raw, under)
		if !ok {
			return "refused"
		}
		return phonenumbers.Format(num, phonenumbers.E164)
	}
	types := []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE, phonenumbers.TOLL_FREE,
		phonenumbers.PREMIUM_RATE, phonenumbers.VOIP, phonenumbers.PERSONAL_NUMBER, phonenumbers.PAGER, phonenumbers.UAN}
	checked, valid, fast := 0, 0, 0
	check := func(raw string, under ...string) {
		for _, u := range under {
			want := reference(raw, u)
			require.Equal(t, want, got(raw, u), "%s parsed under %s", raw, u)
			checked++
			if want != "refused" {
				valid++
			}
			if _, ok := parseE164(raw); ok {
				fast++
			}
		}
	}
	for region := range phonenumbers.GetSupportedRegions() {
		for _, typ := range types {
			ex := phonenumbers.GetExampleNumberForType(region, typ)
			if ex == nil {
				continue
			}
			e164 := phonenumbers.Format(ex, phonenumbers.E164)
			national := phonenumbers.Format(ex, phonenumbers.NATIONAL)
			cc := strconv.Itoa(int(ex.GetCountryCode()))
			nsn := phonenumbers.GetNationalSignificantNumber(ex)
			last := e164[len(e164)-1] - '0'
			raws := []string{e164, e164 + "7", e164[:len(e164)-1], e164[:len(e164)-1] + string(rune('0'+(last+1)%10)),
				compactPhone(national), "+" + cc + "0" + nsn, "+" + cc + phonenumbers.GetNddPrefixForRegion(region, true) + nsn}
			under := []string{"US", region}
			if main := phonenumbers.GetRegionCodeForCountryCode(int(ex.GetCountryCode())); main != region && main != "US" {
				under = append(under, main)
			}
			for _, raw := range raws {
				check(raw, under...)
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 5))
	for range 10000 {
		var b strings.Builder
		b.WriteByte('+')
		for range r.IntN(16) + 2 {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		check(b.String(), "US")
	}
	require.Greater(t, checked, 15000)
	require.Greater(t, valid, 1000)
	require.Greater(t, fast, 1000, "the E.164 shortcut answers for most examples")
}
