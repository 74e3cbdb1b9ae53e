package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHubSpotWebhookIsWhatHubSpotSends: the bench's webhook is valid JSON with a numeric
// objectId, and its key is the one the ingest server gives it (hubspot:deal:<objectId>).
// Were it not readable, the server would publish it whole under the source name and
// every message of the ingest line would land on one partition.
func TestHubSpotWebhookIsWhatHubSpotSends(t *testing.T) {
	t.Parallel()
	for _, i := range []int{0, 1, 199_999} {
		key, body := HubSpotWebhook(2_000_000_000, i, time.UnixMilli(1714557600000))
		var events []struct {
			EventID          json.Number `json:"eventId"`
			ObjectID         json.Number `json:"objectId"`
			SubscriptionType string      `json:"subscriptionType"`
			PropertyName     string      `json:"propertyName"`
			PropertyValue    string      `json:"propertyValue"`
			OccurredAt       int64       `json:"occurredAt"`
		}
		require.NoError(t, json.Unmarshal(body, &events), "%s", body)
		require.Len(t, events, 1)
		e := events[0]
		require.Equal(t, "deal.propertyChange", e.SubscriptionType)
		require.Equal(t, "dealstage", e.PropertyName)
		require.Equal(t, "closedwon", e.PropertyValue)
		require.Equal(t, int64(1714557600000), e.OccurredAt)
		_, err := e.ObjectID.Int64()
		require.NoError(t, err, "objectId %q is not a number", e.ObjectID)
		require.Equal(t, "hubspot:deal:"+e.ObjectID.String(), key)
	}
	k0, _ := HubSpotWebhook(2_000_000_000, 0, time.Now())
	k1, _ := HubSpotWebhook(2_000_000_000, 1, time.Now())
	require.NotEqual(t, k0, k1, "one record per webhook")
}
