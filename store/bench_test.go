package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
)

// BenchmarkWriteBatch writes batches as the consumer does: per stage change one new
// conversion with its identity snapshot, plus the batch's stage counts. It reports stage
// changes per second (the design target is 25,000/s on Postgres with batches of 500-2000).
//
//	go test ./store -run '^$' -bench WriteBatch -benchtime 50x
func BenchmarkWriteBatch(b *testing.B) {
	for _, d := range []struct {
		name string
		cfg  func(testing.TB) store.Config
	}{{"postgres", postgresConfig}, {"sqlite", sqliteConfig}} {
		for _, size := range []int{500, 2000} {
			b.Run(fmt.Sprintf("%s/batch=%d", d.name, size), func(b *testing.B) {
				s, err := store.Open(context.Background(), d.cfg(b), zap.NewNop())
				require.NoError(b, err)
				defer s.Close()
				ctx := context.Background()
				now := time.Now().UTC()
				v := 99.5
				n := 0
				b.ResetTimer()
				for b.Loop() {
					batch := store.Batch{Conversions: make([]store.Conversion, size)}
					for i := range batch.Conversions {
						n++
						key := fmt.Sprintf("%032x", n)
						batch.Conversions[i] = store.Conversion{
							Key: key, Kind: store.KindConversion, Destination: "google", Platform: "google", Rule: "won",
							MappingVersion: "v1", Source: "hubspot", ObjectType: "deal", ObjectID: key,
							SubjectKeys:    []string{"hubspot:deal:" + key, "hubspot:contact:" + key},
							ConversionName: "customers/1/conversionActions/2", OccurredAt: now, Value: &v, Currency: "EUR",
							Identity: store.Identity{SubjectKey: "hubspot:deal:" + key,
								Clicks:      []store.Click{{Type: "gclid", ID: "Cj0KCQ" + key, At: now}},
								Identifiers: pii.Set{"email": key + key, "phone/e164": key + key}},
							State: store.StateReady,
						}
					}
					batch.StageCounts = []store.StageCount{{Day: now, Source: "hubspot", Rule: "won", Count: size}}
					res, err := s.WriteBatch(ctx, batch)
					if err != nil || res.Created != size {
						b.Fatalf("write batch: %+v %v", res, err)
					}
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "stage_changes/s")
			})
		}
	}
}
