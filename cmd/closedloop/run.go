package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/demo"
	"github.com/closedloop/closedloop/internal/logging"
	"github.com/closedloop/closedloop/internal/worker"
)

func newRunCmd() *cobra.Command {
	var path string
	var dev bool
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--dev]",
		Short: "Run the worker: consume stage changes and identities, upload conversions",
		Long: `Run the worker until SIGINT or SIGTERM. SIGHUP (or saving the config file) reloads
the stage mappings. Without --config it runs on embedded defaults: an in-process Kafka
broker, SQLite in a temporary directory and the platform sandbox; nothing leaves the machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if path == "" {
				log, err := logging.New("info", "console", dev)
				if err != nil {
					return err
				}
				defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
				env, err := demo.Start(ctx, log)
				if err != nil {
					return err
				}
				defer env.Close()
				log.Warn("NO --config: running on EMBEDDED DEFAULTS (in-process Kafka, SQLite in a temp dir, sandbox destinations: nothing leaves the machine)",
					zap.Strings("brokers", env.Brokers()), zap.String("sandbox", env.SandboxURL()), zap.String("config", env.ConfigPath()))
				return worker.Run(ctx, env.Config(), log, worker.Options{Signals: hangups(), Listening: env.PrintHowTo(cmd.OutOrStdout())})
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			log, err := logging.New(cfg.Log.Level, cfg.Log.Format, dev)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
			log.Info("closedloop starting", zap.String("version", version), zap.String("config", path))
			return worker.Run(ctx, cfg, log, worker.Options{Signals: hangups()})
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML); omit for the embedded demo defaults")
	cmd.Flags().BoolVar(&dev, "dev", false, "readable console logs at debug level")
	return cmd
}

// hangups delivers SIGHUP, which reloads the stage mappings.
func hangups() <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch
}
