package consumer

import (
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// Row is the outbox row the pipeline writes for one planned conversion of sc, joined to
// the stored identities of sc's subjects (ids: subject key → identity). It is the
// pipeline's own code path, exported so that `mappings explain` shows exactly what the
// worker would write and send.
func Row(sc crm.StageChange, pl crm.Planned, ids map[string]store.Identity, replay bool) store.Conversion {
	keys := subjectKeys(sc)
	return conversionRow(sc, keys, pl, resolve(sc, keys, ids), replay)
}
