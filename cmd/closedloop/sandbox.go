package main

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/logging"
	"github.com/closedloop/closedloop/uploader/platforms"
	"github.com/closedloop/closedloop/uploader/sandbox"
)

// sandboxAPIs lists the registered platforms' APIs ("the A, the B and the C").
func sandboxAPIs() string {
	apis := make([]string, len(platforms.All))
	for i, s := range platforms.All {
		apis[i] = s.API
	}
	if len(apis) < 2 {
		return strings.Join(apis, "")
	}
	return strings.Join(apis[:len(apis)-1], ", ") + " and " + apis[len(apis)-1]
}

func newSandboxCmd() *cobra.Command {
	var listen, faults, logLevel string
	var seed int64
	var statusDelay time.Duration
	cmd := &cobra.Command{
		Use:   "sandbox [--listen 127.0.0.1:8089] [--faults JSON] [--seed N]",
		Short: "Run the local platform sandbox (every registered platform's endpoints, with faults and dedup counts)",
		Long: `sandbox serves emulations of ` + sandboxAPIs() + `, with an OAuth token endpoint
at /token. Point a destination's base_url (and, for a platform that refreshes OAuth tokens,
token_url = <url>/token) at it. GET /sandbox/counts shows what was received and what took
effect per dedup key; POST /sandbox/faults changes the faults, e.g.
  curl -d '{"share_5xx":0.1,"share_429":0.1,"retry_after_seconds":2}' http://127.0.0.1:8089/sandbox/faults`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := sandbox.Options{Seed: seed, StatusDelay: statusDelay}
			if faults != "" {
				if err := json.Unmarshal([]byte(faults), &opts.Faults); err != nil {
					return usageError("--faults: %v", err)
				}
			}
			log, err := logging.New(logLevel, "console", false)
			if err != nil {
				return usageError("--log-level: %v", err)
			}
			defer func() { _ = log.Sync() }()
			srv := platforms.NewSandbox(opts, log.Named("sandbox"))
			url, err := srv.Start(listen)
			if err != nil {
				return err
			}
			log.Info("sandbox listening", zap.String("url", url))
			cmd.Println(url)
			<-cmd.Context().Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(ctx)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8089", "host:port to listen on (port 0 picks a free one)")
	cmd.Flags().StringVar(&faults, "faults", "", `initial faults as JSON, e.g. {"share_5xx":0.05,"share_429":0.05}`)
	cmd.Flags().Int64Var(&seed, "seed", 1, "seed for the fault draws (same seed, same request order: same faults)")
	cmd.Flags().DurationVar(&statusDelay, "status-delay", 0, "how long asynchronously processed requests report they are still processing")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	return cmd
}
