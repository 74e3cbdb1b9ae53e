package consumer

import (
	"github.com/closedloop/closedloop/crm"
	"github.com/closedloop/closedloop/store"
)

// RestatementRow is the candidate restatement row the pipeline offers the store for a
// planned conversion with a RestateKey, exported so that `mappings explain` shows exactly
// what the worker would write and send.
func RestatementRow(sc crm.StageChange, pl crm.Planned, replay bool) store.Conversion {
	return restatementRow(sc, pl, pl.MappingVersion, replay)
}

// restatementRow is the candidate restatement a planned conversion of a rule with
// restate_on offers (pl.RestateKey set): the store inserts it, in the batch's transaction,
// only when the conversion exists with another, older value (store.Batch.Restatements).
// It names the conversion by key, so it is ready at once and needs no identity.
func restatementRow(sc crm.StageChange, pl crm.Planned, version string, replay bool) store.Conversion {
	v := pl.Value.InexactFloat64()
	mv := pl.MappingVersion
	if mv == "" {
		mv = version
	}
	return store.Conversion{
		Key:            pl.RestateKey,
		Kind:           store.KindRestatement,
		RetractsKey:    pl.Key,
		Destination:    pl.Destination,
		Platform:       pl.Platform,
		Rule:           pl.Rule,
		MappingVersion: mv,
		Source:         sc.Source,
		ObjectType:     sc.ObjectType,
		ObjectID:       sc.ObjectID,
		ConversionName: pl.ConversionName,
		OccurredAt:     pl.OccurredAt,
		Value:          &v,
		Currency:       pl.Currency,
		State:          store.StateReady,
		Replay:         replay,
	}
}
