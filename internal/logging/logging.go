// Package logging builds the process's zap logger: JSON in production, a readable console
// format with --dev. Components receive it and name themselves (logger.Named("uploader.meta")).
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger at level ("debug", "info", "warn", "error") in format "json" or
// "console". dev forces the console format at debug level with caller info.
func New(level, format string, dev bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var cfg zap.Config
	if dev || format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		if !dev {
			cfg.Development = false
			cfg.DisableStacktrace = true
		}
	} else {
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "time"
		cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	if !dev {
		cfg.Level = zap.NewAtomicLevelAt(lvl)
	}
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}
