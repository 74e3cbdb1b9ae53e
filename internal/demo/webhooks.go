package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/closedloop/closedloop/internal/ingest"
)

// webhookClient posts the sample's HubSpot and Pipedrive stage changes to the ingest
// endpoint, signed as those CRMs sign, instead of producing them to Kafka directly.
type webhookClient struct {
	base    string
	sources []ingest.SourceConfig
	sent    int
}

// post sends m as a webhook when a source of its format is configured; sent is false
// when m is for Kafka directly.
func (c *webhookClient) post(ctx context.Context, m Message) (sent bool, err error) {
	format := ""
	for _, h := range m.Headers {
		if h.Key == "closedloop-format" {
			format = string(h.Value)
		}
	}
	for _, src := range c.sources {
		if src.CRM != format || m.Topic != src.Topic {
			continue
		}
		h, err := ingest.Sign(src, http.MethodPost, m.Value, time.Now())
		if err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+src.Path, bytes.NewReader(m.Value))
		if err != nil {
			return false, err
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, fmt.Errorf("webhook to %s: %w", src.Name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("webhook to %s: %s", src.Name, resp.Status)
		}
		c.sent++
		return true, nil
	}
	return false, nil
}
