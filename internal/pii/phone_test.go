package pii

import (
	"math/rand/v2"
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
	// error and an impossible number alike, with the same message).
	outcome := func(s, region string) string {
		num, err := phonenumbers.Parse(s, region)
		if err != nil || phonenumbers.IsPossibleNumberWithReason(num) != phonenumbers.IS_POSSIBLE ||
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

func BenchmarkPhone(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	for b.Loop() {
		if _, err := n.phone("+1 (415) 200-1234"); err != nil {
			b.Fatal(err)
		}
	}
}
