package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// KafkaLogger adapts log to kafka-go's Logger: kafka-go's chatty informational lines
// (joins, heartbeats, commits) go out at debug level.
func KafkaLogger(log *zap.Logger) kafka.Logger {
	s := log.WithOptions(zap.AddCallerSkip(1)).Sugar()
	return kafka.LoggerFunc(func(msg string, args ...any) {
		if s.Desugar().Core().Enabled(zap.DebugLevel) {
			s.Debug(fmt.Sprintf(msg, args...))
		}
	})
}

// KafkaErrorLogger adapts log to kafka-go's ErrorLogger: at error level, except what
// kafka-go retries by itself and what a shutdown causes. A broker answering with a
// retriable code (Group Load In Progress while a group joins after a broker start,
// Rebalance In Progress, Not Coordinator...) is a warning; a read or commit cut short by
// the context ending is debug. An operator's error alert then means an error.
func KafkaErrorLogger(log *zap.Logger) kafka.Logger {
	s := log.WithOptions(zap.AddCallerSkip(1)).Sugar()
	return kafka.LoggerFunc(func(msg string, args ...any) {
		line := fmt.Sprintf(msg, args...)
		switch kafkaErrorLevel(args) {
		case zap.DebugLevel:
			s.Debug(line)
		case zap.WarnLevel:
			s.Warn(line)
		default:
			s.Error(line)
		}
	})
}

// kafkaErrorLevel is the level a kafka-go error line with these arguments deserves.
func kafkaErrorLevel(args []any) zapcore.Level {
	level := zap.ErrorLevel
	for _, a := range args {
		err, ok := a.(error)
		if !ok {
			continue
		}
		var ke kafka.Error
		switch {
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			return zap.DebugLevel
		case errors.As(err, &ke) && (ke.Temporary() || ke == kafka.RebalanceInProgress || ke == kafka.IllegalGeneration):
			level = zap.WarnLevel // kafka-go retries or rejoins by itself
		}
	}
	return level
}
