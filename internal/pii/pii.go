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

// Set holds the SHA-256 hex of every normalized form of each field a subject has, keyed by
// the normalization rule: "field" or "field/variant" (for example KeyEmailCanonical,
// KeyPhoneE164 and KeyPhoneDigits). It is what the store keeps; a platform reads the keys
// of the rules it chose (uploader.Spec.Hashes) with Get. The zero value (nil) is an empty
// set.
type Set map[string]string

// The normalization rules, each named by what it does; a rule's name is also the Set key
// its hash is stored under (see Normalizer.Add and the package doc). A platform package
// chooses one rule per field it takes (uploader.Spec.Hashes). Several key strings carry the
// name of the platform whose rule they were first written for: they are stored data, kept.
const (
	KeyEmail            = "email"             // trimmed, lower-cased
	KeyEmailCanonical   = "email/google"      // also no whitespace; gmail.com / googlemail.com without dots and +suffix
	KeyPhoneE164        = "phone/e164"        // +<country><number>
	KeyPhoneDigits      = "phone/digits"      // E.164 digits without the +
	KeyFirstName        = "first_name"        // lower-cased, no punctuation
	KeyFirstNameNoTitle = "first_name/google" // lower-cased, punctuation kept, no honorific prefix
	KeyLastName         = "last_name"         // lower-cased, no punctuation
	KeyLastNameNoSuffix = "last_name/google"  // lower-cased, no punctuation, no Jr./Sr./III suffix
	KeyCity             = "city"
	KeyState            = "state"
	KeyZip              = "zip"
	KeyCountry          = "country"
	KeyDateOfBirth      = "date_of_birth"
	KeyGender           = "gender"
	KeyExternalID       = "external_id"
)

// Get returns the hash stored under key, "" when there is none.
func (s Set) Get(key string) string { return s[key] }
