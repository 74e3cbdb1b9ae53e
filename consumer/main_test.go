package consumer

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener for the SQLite store lives until Close returns.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
