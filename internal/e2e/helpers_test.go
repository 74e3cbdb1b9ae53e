package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/closedloop/closedloop/crm"
)

// dataset is the proof's workload. Deal i belongs to contact i, whose one
// identity capture carries an email and, depending on i, a phone and a gclid, fbc and/or
// ttclid, so every platform can match every deal by email and all three click-ID paths are
// exercised. Everything is derived from i, so the test knows every conversion key.
type dataset struct {
	now time.Time // clicks three days before, conversions an hour before
}

const (
	source = "relay"
	rule   = "closed-won"
)

func (d dataset) contactID(i int) string { return "C-" + strconv.Itoa(i) }
func (d dataset) dealID(i int) string    { return "D-" + strconv.Itoa(i) }

// key is deal i's conversion key on destination.
func (d dataset) key(i int, destination string) string {
	return crm.ConversionKey(source, "deal", d.dealID(i), rule, destination)
}

// consentDenied reports whether contact i denied ad_user_data: its deal is skipped on
// every destination.
func (d dataset) consentDenied(i int) bool { return i%800 == 700 }

// rejectedOn reports whether the sandbox rejects deal i's conversion on destination (its
// key is in the sandbox's RejectKeys).
func (d dataset) rejectedOn(i int, destination string) bool {
	switch destination {
	case destGoogle:
		return i%800 == 11
	case destMeta:
		return i%800 == 333
	case destTikTok:
		return i%800 == 555
	}
	return false
}

type clickAt struct {
	ID        string `json:"id"`
	ClickedAt string `json:"clicked_at"`
}

type captureJSON struct {
	Subject    map[string]string  `json:"subject"`
	CapturedAt string             `json:"captured_at"`
	ClickIDs   map[string]clickAt `json:"click_ids,omitempty"`
	Email      string             `json:"email"`
	Phone      string             `json:"phone,omitempty"`
	Consent    map[string]string  `json:"consent"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// identity is contact i's capture: clicked three days ago, captured a minute later.
func (d dataset) identity(i int) kafka.Message {
	click := d.now.Add(-72 * time.Hour)
	at := rfc3339(click)
	clicks := map[string]clickAt{}
	if i%4 == 1 || i%4 == 3 {
		clicks["gclid"] = clickAt{ID: "Cj0KCQiA-e2e-" + strconv.Itoa(i), ClickedAt: at}
	}
	if i%4 == 2 || i%4 == 3 {
		clicks["fbc"] = clickAt{ID: fmt.Sprintf("fb.1.%d.IwAR-e2e-%d", click.UnixMilli(), i), ClickedAt: at}
	}
	if i%4 == 3 || i%8 == 4 {
		clicks["ttclid"] = clickAt{ID: "E.C.P.e2e-" + strconv.Itoa(i), ClickedAt: at}
	}
	c := captureJSON{
		Subject:    map[string]string{"type": "contact", "source": source, "id": d.contactID(i)},
		CapturedAt: rfc3339(click.Add(time.Minute)),
		ClickIDs:   clicks,
		Email:      fmt.Sprintf("Buyer.%d@Example.com", i),
		Consent:    map[string]string{"ad_user_data": "granted", "ad_personalization": "granted"},
	}
	if i%3 == 0 {
		c.Phone = fmt.Sprintf("+1 (415) %03d-%04d", 200+(i/10000)%800, i%10000)
	}
	if d.consentDenied(i) {
		c.Consent = map[string]string{"ad_user_data": "denied", "ad_personalization": "denied"}
	}
	v, err := json.Marshal(c)
	if err != nil {
		panic(err) // fixed shapes: a marshal error is a bug in this file
	}
	return kafka.Message{Key: []byte(d.contactID(i)), Value: v}
}

// stageChange is deal i closed-won an hour ago (canonical JSON).
func (d dataset) stageChange(i int) kafka.Message {
	v, err := json.Marshal(map[string]any{
		"source": source, "object_type": "deal", "object_id": d.dealID(i), "pipeline": "default",
		"stage": "closedwon", "status": "won", "occurred_at": rfc3339(d.now.Add(-time.Hour)),
		"amount": fmt.Sprintf("%d.%02d", 100+i%5000, i%100), "currency": "USD",
		"contact_ids": []string{d.contactID(i)},
	})
	if err != nil {
		panic(err)
	}
	return kafka.Message{Key: []byte(d.dealID(i)), Value: v}
}

// produce writes msgs to topic, waiting for every partition leader's ack.
func produce(ctx context.Context, brokers []string, topic string, msgs []kafka.Message) error {
	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 1000, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll, MaxAttempts: 20,
	}
	defer w.Close()
	// A topic just created can be unknown to the writer's metadata for a moment on a busy
	// broker, even after its leaders are elected: the messages refused with that one error
	// (and only those, so nothing is written twice) are retried a while.
	for attempt := 0; ; attempt++ {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if !errors.Is(err, kafka.UnknownTopicOrPartition) || attempt == 40 {
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
		var we kafka.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var again []kafka.Message
			for i, e := range we {
				if e != nil {
					if !errors.Is(e, kafka.UnknownTopicOrPartition) {
						return fmt.Errorf("produce to %s: %w", topic, err)
					}
					again = append(again, msgs[i])
				}
			}
			msgs = again
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce to %s: %w", topic, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// groupLag is how many messages of topic group has not committed yet (a partition without
// a commit counts from offset 0: the topics are fresh).
func groupLag(ctx context.Context, client *kafka.Client, group, topic string) (int64, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	var reqs []kafka.OffsetRequest
	var parts []int
	for _, t := range meta.Topics {
		if t.Error != nil {
			return 0, t.Error
		}
		for _, p := range t.Partitions {
			reqs = append(reqs, kafka.LastOffsetOf(p.ID))
			parts = append(parts, p.ID)
		}
	}
	ends, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return 0, err
	}
	if committed.Error != nil {
		return 0, committed.Error
	}
	got := map[int]int64{}
	for _, p := range committed.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		got[p.Partition] = max(p.CommittedOffset, 0)
	}
	var lag int64
	for _, p := range ends.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		lag += p.LastOffset - got[p.Partition]
	}
	return lag, nil
}

// endOffsets sums the end offsets of topic's partitions (its message count when fresh).
func endOffsets(ctx context.Context, client *kafka.Client, topic string) (int64, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	var reqs []kafka.OffsetRequest
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			reqs = append(reqs, kafka.LastOffsetOf(p.ID))
		}
	}
	ends, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range ends.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		n += p.LastOffset
	}
	return n, nil
}

// pausedGauges scrapes the admin server's /metrics and returns closedloop_destination_paused
// per destination.
func pausedGauges(ctx context.Context, adminAddr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("/metrics answered %s", resp.Status)
	}
	const prefix = `closedloop_destination_paused{destination="`
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		dest, rest, ok := strings.Cut(line, `"} `)
		if !ok {
			return nil, fmt.Errorf("unexpected paused series %q", sc.Text())
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return nil, fmt.Errorf("paused series %q: %w", sc.Text(), err)
		}
		out[dest] = v
	}
	return out, sc.Err()
}

// waitFor calls check every interval until it reports done, ctx ends (the error then
// carries check's last description of what it is still waiting for) or check fails.
func waitFor(ctx context.Context, what string, interval time.Duration, check func(context.Context) (done bool, status string, err error)) error {
	status := "not checked yet"
	for {
		done, s, err := check(ctx)
		if err == nil && done {
			return nil
		}
		if err != nil {
			status = "last check failed: " + err.Error()
		} else {
			status = s
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s: %w; %s", what, context.Cause(ctx), status)
		case <-t.C:
		}
	}
}
