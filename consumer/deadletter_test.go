package consumer

import (
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

func headerMap(hs []kafka.Header) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		out[h.Key] = string(h.Value)
	}
	return out
}

func TestDeadLetterKeepsOriginalAndAddsReasonHeaders(t *testing.T) {
	t.Parallel()
	src := kafka.Message{
		Topic: "crm.stage-changes", Partition: 3, Offset: 42,
		Key: []byte("deal-1"), Value: []byte(`{"bad":`),
		Headers: []kafka.Header{
			{Key: "trace", Value: []byte("abc")},
			{Key: HeaderErrorReason, Value: []byte("stale reason from an earlier failure")},
		},
	}
	tests := []struct {
		name      string
		dl        deadLetter
		wantIndex string
	}{
		{"whole message", deadLetter{src: src, code: ReasonUndecodable, reason: "canonical: payload is not JSON", index: -1}, ""},
		{"one event of a batch", deadLetter{src: src, code: ReasonBadEvent, reason: "hubspot: event 2: occurredAt: missing", field: "occurredAt", index: 2}, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := tt.dl.message("dlq")
			require.Equal(t, "dlq", m.Topic)
			require.Equal(t, src.Key, m.Key)
			require.Equal(t, src.Value, m.Value)
			h := headerMap(m.Headers)
			require.Equal(t, "abc", h["trace"], "original headers are kept")
			require.Equal(t, tt.dl.reason, h[HeaderErrorReason], "the new reason replaces a stale one")
			require.Equal(t, tt.dl.field, h[HeaderErrorField])
			require.Equal(t, tt.dl.code, h[HeaderErrorCode])
			require.Equal(t, "crm.stage-changes", h[HeaderSourceTopic])
			require.Equal(t, "3", h[HeaderSourcePartition])
			require.Equal(t, "42", h[HeaderSourceOffset])
			idx, ok := h[HeaderErrorIndex]
			require.Equal(t, tt.wantIndex != "", ok)
			require.Equal(t, tt.wantIndex, idx)
			n := 0
			for _, x := range m.Headers {
				if x.Key == HeaderErrorReason {
					n++
				}
			}
			require.Equal(t, 1, n)
		})
	}
}

func TestLastPerPartition(t *testing.T) {
	t.Parallel()
	msgs := []kafka.Message{
		{Topic: "a", Partition: 0, Offset: 5},
		{Topic: "a", Partition: 1, Offset: 9},
		{Topic: "a", Partition: 0, Offset: 6},
		{Topic: "b", Partition: 0, Offset: 1},
		{Topic: "a", Partition: 0, Offset: 7},
	}
	got := lastPerPartition(msgs)
	require.Equal(t, []kafka.Message{
		{Topic: "a", Partition: 0, Offset: 7},
		{Topic: "a", Partition: 1, Offset: 9},
		{Topic: "b", Partition: 0, Offset: 1},
	}, got)
	require.Empty(t, lastPerPartition(nil))
}
