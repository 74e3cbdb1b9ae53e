package pii

// Field names a personal identifier.
type Field string

const (
	Email       Field = "email"
	Phone       Field = "phone"
	FirstName   Field = "first_name"
	LastName    Field = "last_name"
	City        Field = "city"
	State       Field = "state"
	Zip         Field = "zip"
	Country     Field = "country"
	DateOfBirth Field = "date_of_birth"
	Gender      Field = "gender"
	ExternalID  Field = "external_id"
)

// Platform names an ad platform whose normalization rules differ.
type Platform string

const (
	Google    Platform = "google"
	Meta      Platform = "meta"
	TikTok    Platform = "tiktok"
	Microsoft Platform = "microsoft"
	LinkedIn  Platform = "linkedin"
)

// Set holds the SHA-256 hex of every platform-specific normalized form of each field a
// subject has, keyed "field" or "field/variant" (for example "email/google" for the
// gmail-dot-stripped form, "phone/e164" and "phone/digits"). It is what the store keeps;
// Set.For derives the hash one platform wants. The zero value (nil) is an empty set.
type Set map[string]string

// Set keys: the normalized form of a field each is the SHA-256 of (see Normalizer.Add).
// A platform package names the ones it reads (uploader.Spec.Hashes).
const (
	KeyEmail           = "email"             // trimmed, lower-cased
	KeyEmailGoogle     = "email/google"      // also dots and +suffix stripped for gmail.com / googlemail.com
	KeyPhoneE164       = "phone/e164"        // +<country><number>
	KeyPhoneDigits     = "phone/digits"      // E.164 digits without the +
	KeyFirstName       = "first_name"        // lower-cased letters
	KeyFirstNameGoogle = "first_name/google" // Google's form
	KeyLastName        = "last_name"
	KeyLastNameGoogle  = "last_name/google"
	KeyCity            = "city"
	KeyState           = "state"
	KeyZip             = "zip"
	KeyCountry         = "country"
	KeyDateOfBirth     = "date_of_birth"
	KeyGender          = "gender"
	KeyExternalID      = "external_id"
)

// Get returns the hash stored under key, "" when there is none.
func (s Set) Get(key string) string { return s[key] }
