package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestKafkaErrorLoggerLevels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want zapcore.Level
	}{
		{"group loading after a broker start", kafka.GroupLoadInProgress, zap.WarnLevel},
		{"rebalance", fmt.Errorf("commit: %w", kafka.RebalanceInProgress), zap.WarnLevel},
		{"shutdown", fmt.Errorf("fetch: %w", context.Canceled), zap.DebugLevel},
		{"not retriable", kafka.TopicAuthorizationFailed, zap.ErrorLevel},
		{"anything else", errors.New("unexpected EOF"), zap.ErrorLevel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zap.DebugLevel)
			KafkaErrorLogger(zap.New(core)).Printf("Failed to join group %s: %v", "g", tc.err)
			require.Equal(t, 1, logs.Len())
			e := logs.All()[0]
			require.Equal(t, tc.want, e.Level)
			require.Contains(t, e.Message, "Failed to join group g: ")
		})
	}
}
