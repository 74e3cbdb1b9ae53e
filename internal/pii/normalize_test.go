package pii_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/closedloop/closedloop/internal/pii"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestWorkedExamples checks every input → normalized → SHA-256 example in
// reference/platforms.md (sections 1.7, 2.7, 3.7).
func TestWorkedExamples(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	tests := []struct {
		name       string
		rule       string
		in         string
		normalized string
		hash       string
	}{
		{"google gmail dots and plus", pii.KeyEmailCanonical, "cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com", "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"},
		{"google other domain keeps dots and plus", pii.KeyEmailCanonical, "user.name+NYC@Example.com", "user.name+nyc@example.com", "f109a2a632fbcea5fc82049f50beed3d8621bf9034399f437fb622222acccdac"},
		{"google documented rule, not the python example", pii.KeyEmailCanonical, "alex.2@example.com", "alex.2@example.com", "97a24240e3c76dfc0abdb63a3d73468ff8d94b81fd3dc084cc32994ba4fad7fe"},
		{"google phone", pii.KeyPhoneE164, "(800)555-0100", "+18005550100", "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"},
		{"meta email", pii.KeyEmail, "John_Smith@gmail.com", "john_smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"},
		{"meta phone", pii.KeyPhoneDigits, "(650)555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"},
		{"meta first name", pii.KeyFirstName, "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"},
		{"meta hangul name", pii.KeyLastName, "정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"},
		{"meta accented name", pii.KeyFirstName, "Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"},
		{"meta accented name decomposed", pii.KeyFirstName, "Vale\u0301ry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"},
		{"meta date of birth", pii.KeyDateOfBirth, "2/16/1997", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"},
		{"meta country name", pii.KeyCountry, "United States", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"},
		{"meta city", pii.KeyCity, "New York", "newyork", sha("newyork")},
		{"meta state", pii.KeyState, "CA", "ca", sha("ca")},
		{"meta us zip", pii.KeyZip, "94035", "94035", sha("94035")},
		{"meta uk postcode", pii.KeyZip, "M1 1AE", "m11ae", sha("m11ae")},
		{"tiktok email", pii.KeyEmail, " ALICE_abc@gmail.com ", "alice_abc@gmail.com", "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"},
		{"tiktok phone", pii.KeyPhoneE164, "(+1)2133734253", "+12133734253", "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"},
		{"tiktok external id", pii.KeyExternalID, "user_123", "user_123", "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := n.Normalize(tt.rule, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.normalized, got)
			h, err := n.Hash(tt.rule, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.hash, h)
			require.Equal(t, sha(tt.normalized), h, "hash is the SHA-256 of the normalized form")

			s := pii.Set{}
			field, _, _ := strings.Cut(tt.rule, "/")
			require.NoError(t, n.Add(s, pii.Field(field), tt.in))
			require.Equal(t, tt.hash, s.Get(tt.rule), "the Set holds the rule's hash under its key")
		})
	}
}

func TestNormalizeRules(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	tests := []struct {
		rule     string
		in, want string
	}{
		{pii.KeyEmailCanonical, " Jane . Doe+news @ GoogleMail.com ", "janedoe@googlemail.com"},
		{pii.KeyEmail, "Jane.Doe+news@GMAIL.com", "jane.doe+news@gmail.com"},
		{pii.KeyEmail, " Jane.Doe@Gmail.com", "jane.doe@gmail.com"},
		{pii.KeyEmail, "Jane.Doe@Gmail.com ", "jane.doe@gmail.com"},
		{pii.KeyPhoneE164, "650.555.1212", "+16505551212"},
		{pii.KeyPhoneDigits, "+44 20 7946 0958", "442079460958"},
		{pii.KeyPhoneE164, "+49 (0)30 1234567", "+49301234567"},
		{pii.KeyFirstName, "  Mary-Ann   O'Neil ", "maryann oneil"},
		{pii.KeyFirstNameNoTitle, "  Mrs.  Mary-Ann ", "mary-ann"},
		{pii.KeyLastNameNoSuffix, "Smith-Jones Jr.", "smithjones"},
		{pii.KeyLastName, "Smith-Jones Jr.", "smithjones jr"},
		{pii.KeyCity, "St. Louis", "stlouis"},
		{pii.KeyState, "California", "ca"},
		{pii.KeyState, "Bavaria", "bavaria"},
		{pii.KeyZip, "94035-1234", "94035"},
		{pii.KeyCountry, "DEU", "de"},
		{pii.KeyCountry, "Germany", "de"},
		{pii.KeyCountry, "uk", "gb"},
		{pii.CountryCodeKey, "us", "US"},
		{pii.KeyDateOfBirth, "1997-02-16", "19970216"},
		{pii.KeyDateOfBirth, "16/2/1997", "19970216"},
		{pii.KeyDateOfBirth, "16.02.1997", "19970216"},
		{pii.KeyGender, "Female", "f"},
		{pii.KeyGender, " M ", "m"},
		{pii.KeyExternalID, " CRM-Contact-991 ", "CRM-Contact-991"},
	}
	for _, tt := range tests {
		t.Run(tt.rule+"/"+tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := n.Normalize(tt.rule, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestPrehashedPassesThrough(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	h := sha("someone@example.com")
	for _, rule := range []string{pii.KeyEmail, pii.KeyEmailCanonical, pii.KeyPhoneDigits, pii.KeyFirstName, pii.KeyCountry, pii.KeyExternalID} {
		got, err := n.Hash(rule, h)
		require.NoError(t, err)
		require.Equal(t, h, got, "never hashed twice")
		got, err = n.Hash(rule, " "+strings.ToUpper(h)+" ")
		require.NoError(t, err)
		require.Equal(t, h, got, "upper case hex is the same hash")
	}
	s := pii.Set{}
	require.NoError(t, n.Add(s, pii.Email, h))
	require.NoError(t, n.Add(s, pii.Phone, h))
	for _, rule := range []string{pii.KeyEmail, pii.KeyEmailCanonical, pii.KeyPhoneDigits, pii.KeyPhoneE164} {
		require.Equal(t, h, s.Get(rule), "stored under every rule of its field: %s", rule)
	}
	require.Empty(t, s.Get(pii.KeyFirstName), "no other field")
}

func TestAbsentAddsNothing(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	for _, in := range []string{"", "   ", "\t\n"} {
		for _, f := range []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State, pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID} {
			s := pii.Set{}
			require.NoError(t, n.Add(s, f, in), f)
			require.Empty(t, s, f)
			rule := string(f)
			if f == pii.Phone {
				rule = pii.KeyPhoneDigits
			}
			h, err := n.Hash(rule, in)
			require.NoError(t, err)
			require.Empty(t, h, "absent is never the hash of the empty string")
		}
	}
	// Only punctuation: empty after normalization, so absent.
	s := pii.Set{}
	require.NoError(t, n.Add(s, pii.FirstName, " .-' "))
	require.NoError(t, n.Add(s, pii.City, "..."))
	require.Empty(t, s)
}

func TestAddWritesEveryVariant(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	s := pii.Set{}
	require.NoError(t, n.Add(s, pii.Email, "Jane.Doe+x@gmail.com"))
	require.NoError(t, n.Add(s, pii.Phone, "(650)555-1212"))
	require.NoError(t, n.Add(s, pii.Country, "Germany"))
	require.Equal(t, pii.Set{
		"email":        sha("jane.doe+x@gmail.com"),
		"email/google": sha("janedoe@gmail.com"),
		"phone/e164":   sha("+16505551212"),
		"phone/digits": sha("16505551212"),
		"country":      sha("de"),
		"country/code": "DE",
	}, s)
	require.Equal(t, "DE", s.CountryCode())

	// A later non-gmail address replaces both email keys: no stale canonical form survives.
	require.NoError(t, n.Add(s, pii.Email, "other@example.com"))
	require.Equal(t, sha("other@example.com"), s.Get(pii.KeyEmailCanonical))
	require.Equal(t, sha("other@example.com"), s.Get(pii.KeyEmail))
}

// TestEveryRuleHashed: a Set made from every field holds a hash under every rule's key,
// and the clear country code under CountryCodeKey only.
func TestEveryRuleHashed(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	s := pii.Set{}
	for f, v := range map[pii.Field]string{
		pii.Email: "a@b.co", pii.Phone: "6505551212", pii.FirstName: "Ann", pii.LastName: "Lee",
		pii.City: "Paris", pii.State: "IdF", pii.Zip: "75001", pii.Country: "FR",
		pii.DateOfBirth: "2000-01-02", pii.Gender: "f", pii.ExternalID: "u1",
	} {
		require.NoError(t, n.Add(s, f, v))
	}
	rules := []string{pii.KeyEmail, pii.KeyEmailCanonical, pii.KeyPhoneE164, pii.KeyPhoneDigits,
		pii.KeyFirstName, pii.KeyFirstNameNoTitle, pii.KeyLastName, pii.KeyLastNameNoSuffix, pii.KeyCity,
		pii.KeyState, pii.KeyZip, pii.KeyCountry, pii.KeyDateOfBirth, pii.KeyGender, pii.KeyExternalID}
	for _, rule := range rules {
		require.True(t, pii.IsSHA256Hex(s.Get(rule)), rule)
		h, err := n.Hash(rule, "  ")
		require.NoError(t, err, rule)
		require.Empty(t, h, "%s: absent stays absent", rule)
	}
	require.Len(t, s, len(rules)+1, "every rule, and the clear country code")
	require.Equal(t, "FR", s.Get(pii.CountryCodeKey))
	var empty pii.Set
	require.Empty(t, empty.Get(pii.KeyEmail), "nil set is empty")
}

func TestErrorsNameFieldNotValue(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	tests := []struct {
		rule     string
		field    pii.Field
		in, want string
	}{
		{pii.KeyPhoneDigits, pii.Phone, "555-1234-NOPE-98765", "phone: not a valid phone number for region US"},
		{pii.KeyPhoneDigits, pii.Phone, "12", "phone: not a valid phone number for region US"},
		{pii.KeyPhoneDigits, pii.Phone, "call me", "phone: not a valid phone number"},
		{pii.KeyEmail, pii.Email, "jane.doe.example.com", "email: not a valid email address"},
		{pii.KeyEmail, pii.Email, "jane@doe@example.com", "email: not a valid email address"},
		{pii.KeyEmailCanonical, pii.Email, "+tag@gmail.com", "email: not a valid email address"},
		{pii.KeyCountry, pii.Country, "Atlantis", "country: not an ISO 3166-1 country code or English country name"},
		{pii.KeyDateOfBirth, pii.DateOfBirth, "1997-02-30", "date_of_birth: not a date (want YYYY-MM-DD, YYYYMMDD, M/D/YYYY or D.M.YYYY)"},
		{pii.KeyGender, pii.Gender, "unknownish", "gender: not a recognised gender (want f or m)"},
		{"phone/sms", pii.Phone, "+16505551212", "phone: unknown rule phone/sms"},
		{"ssn", pii.Field("ssn"), "1", "ssn: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			_, err := n.Hash(tt.rule, tt.in)
			require.Error(t, err)
			require.Equal(t, tt.want, err.Error())
			var pe *pii.Error
			require.True(t, errors.As(err, &pe))
			require.Equal(t, tt.field, pe.Field)
			require.NotContains(t, err.Error(), tt.in)
		})
	}
	_, err := pii.Normalizer{}.Hash(pii.KeyPhoneDigits, "6505551212")
	require.EqualError(t, err, "phone: not a valid phone number (no country code and no default region)")
	h, err := pii.Normalizer{}.Hash(pii.KeyPhoneDigits, "+1 650 555 1212")
	require.NoError(t, err)
	require.Equal(t, sha("16505551212"), h)
}

func TestIsSHA256Hex(t *testing.T) {
	t.Parallel()
	require.True(t, pii.IsSHA256Hex(sha("x")))
	require.False(t, pii.IsSHA256Hex(strings.ToUpper(sha("x"))))
	require.False(t, pii.IsSHA256Hex(sha("x")[:63]))
	require.False(t, pii.IsSHA256Hex(sha("x")[:63]+"g"))
	require.False(t, pii.IsSHA256Hex(""))
}

func FuzzAdd(f *testing.F) {
	for _, s := range []string{"cloudy.sanfrancisco+shopping@gmail.com", "(650)555-1212", "Valéry", "2/16/1997", "United States", "M1 1AE", "", "@", "+", sha("x")} {
		f.Add(s)
	}
	fields := []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State, pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID}
	n := pii.Normalizer{DefaultRegion: "DE"}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, field := range fields {
			s := pii.Set{}
			err := n.Add(s, field, raw)
			if err != nil {
				require.Empty(t, s, "no partial writes on error")
				var pe *pii.Error
				require.True(t, errors.As(err, &pe))
				require.True(t, strings.HasPrefix(err.Error(), string(field)+": "))
				if r := strings.TrimSpace(raw); len(r) > 3 && strings.ContainsAny(r, "@0123456789") {
					require.NotContains(t, err.Error(), strings.TrimSpace(raw))
				}
				continue
			}
			for k, v := range s {
				if k == pii.CountryCodeKey {
					require.Len(t, v, 2)
					continue
				}
				require.True(t, pii.IsSHA256Hex(v), "key %s holds a hash", k)
				require.NotEqual(t, sha(""), v, "never the hash of the empty string")
			}
		}
	})
}
