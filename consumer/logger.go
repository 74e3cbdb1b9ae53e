package consumer

import (
	"fmt"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
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

// KafkaErrorLogger adapts log to kafka-go's ErrorLogger, at error level.
func KafkaErrorLogger(log *zap.Logger) kafka.Logger {
	s := log.WithOptions(zap.AddCallerSkip(1)).Sugar()
	return kafka.LoggerFunc(func(msg string, args ...any) {
		s.Error(fmt.Sprintf(msg, args...))
	})
}
