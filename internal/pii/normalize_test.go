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
		platform   pii.Platform
		field      pii.Field
		in         string
		normalized string
		hash       string
	}{
		{"google gmail dots and plus", pii.Google, pii.Email, "cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com", "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"},
		{"google other domain keeps dots and plus", pii.Google, pii.Email, "user.name+NYC@Example.com", "user.name+nyc@example.com", "f109a2a632fbcea5fc82049f50beed3d8621bf9034399f437fb622222acccdac"},
		{"google documented rule, not the python example", pii.Google, pii.Email, "alex.2@example.com", "alex.2@example.com", "97a24240e3c76dfc0abdb63a3d73468ff8d94b81fd3dc084cc32994ba4fad7fe"},
		{"google phone", pii.Google, pii.Phone, "(800)555-0100", "+18005550100", "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"},
		{"meta email", pii.Meta, pii.Email, "John_Smith@gmail.com", "john_smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"},
		{"meta phone", pii.Meta, pii.Phone, "(650)555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"},
		{"meta first name", pii.Meta, pii.FirstName, "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"},
		{"meta hangul name", pii.Meta, pii.LastName, "정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"},
		{"meta accented name", pii.Meta, pii.FirstName, "Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"},
		{"meta accented name decomposed", pii.Meta, pii.FirstName, "Vale\u0301ry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"},
		{"meta date of birth", pii.Meta, pii.DateOfBirth, "2/16/1997", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"},
		{"meta country name", pii.Meta, pii.Country, "United States", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"},
		{"meta city", pii.Meta, pii.City, "New York", "newyork", sha("newyork")},
		{"meta state", pii.Meta, pii.State, "CA", "ca", sha("ca")},
		{"meta us zip", pii.Meta, pii.Zip, "94035", "94035", sha("94035")},
		{"meta uk postcode", pii.Meta, pii.Zip, "M1 1AE", "m11ae", sha("m11ae")},
		{"tiktok email", pii.TikTok, pii.Email, " ALICE_abc@gmail.com ", "alice_abc@gmail.com", "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"},
		{"tiktok phone", pii.TikTok, pii.Phone, "(+1)2133734253", "+12133734253", "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"},
		{"tiktok external id", pii.TikTok, pii.ExternalID, "user_123", "user_123", "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := n.Normalize(tt.platform, tt.field, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.normalized, got)
			h, err := n.Hash(tt.platform, tt.field, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.hash, h)
			require.Equal(t, sha(tt.normalized), h, "hash is the SHA-256 of the normalized form")

			s := pii.Set{}
			require.NoError(t, n.Add(s, tt.field, tt.in))
			require.Equal(t, tt.hash, s.For(tt.platform, tt.field), "Set.For serves the platform's form")
		})
	}
}

func TestNormalizeRules(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	tests := []struct {
		platform pii.Platform
		field    pii.Field
		in, want string
	}{
		{pii.Google, pii.Email, " Jane . Doe+news @ GoogleMail.com ", "janedoe@googlemail.com"},
		{pii.Meta, pii.Email, "Jane.Doe+news@GMAIL.com", "jane.doe+news@gmail.com"},
		{pii.Microsoft, pii.Email, " Jane.Doe@Gmail.com", "jane.doe@gmail.com"},
		{pii.LinkedIn, pii.Email, "Jane.Doe@Gmail.com ", "jane.doe@gmail.com"},
		{pii.Microsoft, pii.Phone, "650.555.1212", "+16505551212"},
		{pii.Meta, pii.Phone, "+44 20 7946 0958", "442079460958"},
		{pii.Google, pii.Phone, "+49 (0)30 1234567", "+49301234567"},
		{pii.Meta, pii.FirstName, "  Mary-Ann   O'Neil ", "maryann oneil"},
		{pii.Google, pii.FirstName, "  Mrs.  Mary-Ann ", "mary-ann"},
		{pii.Google, pii.LastName, "Smith-Jones Jr.", "smithjones"},
		{pii.Meta, pii.LastName, "Smith-Jones Jr.", "smithjones jr"},
		{pii.Meta, pii.City, "St. Louis", "stlouis"},
		{pii.Meta, pii.State, "California", "ca"},
		{pii.Meta, pii.State, "Bavaria", "bavaria"},
		{pii.Meta, pii.Zip, "94035-1234", "94035"},
		{pii.Meta, pii.Country, "DEU", "de"},
		{pii.Meta, pii.Country, "Germany", "de"},
		{pii.Meta, pii.Country, "uk", "gb"},
		{pii.Google, pii.Country, "us", "US"},
		{pii.Meta, pii.DateOfBirth, "1997-02-16", "19970216"},
		{pii.Meta, pii.DateOfBirth, "16/2/1997", "19970216"},
		{pii.Meta, pii.DateOfBirth, "16.02.1997", "19970216"},
		{pii.Meta, pii.Gender, "Female", "f"},
		{pii.Meta, pii.Gender, " M ", "m"},
		{pii.Meta, pii.ExternalID, " CRM-Contact-991 ", "CRM-Contact-991"},
	}
	for _, tt := range tests {
		t.Run(string(tt.platform)+"/"+string(tt.field)+"/"+tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := n.Normalize(tt.platform, tt.field, tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestPrehashedPassesThrough(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	h := sha("someone@example.com")
	for _, f := range []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.Country, pii.ExternalID} {
		got, err := n.Hash(pii.Meta, f, h)
		require.NoError(t, err)
		require.Equal(t, h, got, "never hashed twice")
		got, err = n.Hash(pii.Meta, f, " "+strings.ToUpper(h)+" ")
		require.NoError(t, err)
		require.Equal(t, h, got, "upper case hex is the same hash")
	}
	s := pii.Set{}
	require.NoError(t, n.Add(s, pii.Email, h))
	require.NoError(t, n.Add(s, pii.Phone, h))
	for _, p := range []pii.Platform{pii.Google, pii.Meta, pii.TikTok, pii.Microsoft, pii.LinkedIn} {
		require.Equal(t, h, s.For(p, pii.Email), p)
	}
	require.Equal(t, h, s.For(pii.Meta, pii.Phone))
	require.Equal(t, h, s.For(pii.Google, pii.Phone))
	require.Empty(t, s.For(pii.LinkedIn, pii.Phone))
}

func TestAbsentAddsNothing(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	for _, in := range []string{"", "   ", "\t\n"} {
		for _, f := range []pii.Field{pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State, pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID} {
			s := pii.Set{}
			require.NoError(t, n.Add(s, f, in), f)
			require.Empty(t, s, f)
			h, err := n.Hash(pii.Meta, f, in)
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
	require.Empty(t, s.For(pii.Google, pii.Country), "Google takes the country in clear, not hashed")
	require.True(t, s.Has(pii.Meta, pii.Country))

	// A later non-gmail address replaces both email keys: no stale Google form survives.
	require.NoError(t, n.Add(s, pii.Email, "other@example.com"))
	require.Equal(t, sha("other@example.com"), s.For(pii.Google, pii.Email))
	require.Equal(t, sha("other@example.com"), s.For(pii.Meta, pii.Email))
}

func TestForPlatformTable(t *testing.T) {
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
	has := map[pii.Platform][]pii.Field{
		pii.Google:    {pii.Email, pii.Phone, pii.FirstName, pii.LastName},
		pii.Meta:      {pii.Email, pii.Phone, pii.FirstName, pii.LastName, pii.City, pii.State, pii.Zip, pii.Country, pii.DateOfBirth, pii.Gender, pii.ExternalID},
		pii.TikTok:    {pii.Email, pii.Phone, pii.ExternalID},
		pii.Microsoft: {pii.Email, pii.Phone},
		pii.LinkedIn:  {pii.Email},
	}
	all := has[pii.Meta]
	for p, fields := range has {
		want := map[pii.Field]bool{}
		for _, f := range fields {
			want[f] = true
		}
		for _, f := range all {
			require.Equal(t, want[f], s.Has(p, f), "%s %s", p, f)
			if want[f] {
				require.True(t, pii.IsSHA256Hex(s.For(p, f)))
			}
		}
	}
	var empty pii.Set
	require.Empty(t, empty.For(pii.Meta, pii.Email), "nil set is empty")
}

func TestErrorsNameFieldNotValue(t *testing.T) {
	t.Parallel()
	n := pii.Normalizer{DefaultRegion: "US"}
	tests := []struct {
		platform pii.Platform
		field    pii.Field
		in, want string
	}{
		{pii.Meta, pii.Phone, "555-1234-NOPE-98765", "phone: not a valid phone number for region US"},
		{pii.Meta, pii.Phone, "12", "phone: not a valid phone number for region US"},
		{pii.Meta, pii.Phone, "call me", "phone: not a valid phone number"},
		{pii.Meta, pii.Email, "jane.doe.example.com", "email: not a valid email address"},
		{pii.Meta, pii.Email, "jane@doe@example.com", "email: not a valid email address"},
		{pii.Google, pii.Email, "+tag@gmail.com", "email: not a valid email address"},
		{pii.Meta, pii.Country, "Atlantis", "country: not an ISO 3166-1 country code or English country name"},
		{pii.Meta, pii.DateOfBirth, "1997-02-30", "date_of_birth: not a date (want YYYY-MM-DD, YYYYMMDD, M/D/YYYY or D.M.YYYY)"},
		{pii.Meta, pii.Gender, "unknownish", "gender: not a recognised gender (want f or m)"},
		{pii.LinkedIn, pii.Phone, "+16505551212", "phone: linkedin takes no such identifier"},
		{pii.Platform("myspace"), pii.Email, "a@b.co", "email: unknown platform myspace"},
		{pii.Meta, pii.Field("ssn"), "1", "ssn: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			_, err := n.Hash(tt.platform, tt.field, tt.in)
			require.Error(t, err)
			require.Equal(t, tt.want, err.Error())
			var pe *pii.Error
			require.True(t, errors.As(err, &pe))
			require.Equal(t, tt.field, pe.Field)
			require.NotContains(t, err.Error(), tt.in)
		})
	}
	_, err := pii.Normalizer{}.Hash(pii.Meta, pii.Phone, "6505551212")
	require.EqualError(t, err, "phone: not a valid phone number (no country code and no default region)")
	h, err := pii.Normalizer{}.Hash(pii.Meta, pii.Phone, "+1 650 555 1212")
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
