package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/closedloop/closedloop/internal/demo"
	"github.com/closedloop/closedloop/internal/logging"
)

func newDemoCmd() *cobra.Command {
	var keep, verbose bool
	cmd := &cobra.Command{
		Use:   "demo [--keep-running]",
		Short: "Run the worker on embedded defaults with a sample and print the reconciliation report",
		Long: `Start an in-process Kafka broker, SQLite in a temp dir and the platform sandbox (all on
127.0.0.1), run the real worker, publish a sample of identity captures and stage changes in
every CRM format (with duplicates, a late identity, denied consent, a deal too old for Meta
and a malformed message), wait for it to drain and print the reconciliation report.
Exits 0 when every count matches the sample's known truth and the sandbox's own counts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := "warn"
			if verbose {
				level = "info"
			}
			log, err := logging.New(level, "console", false)
			if err != nil {
				return err
			}
			res, err := demo.Run(cmd.Context(), demo.Options{Out: cmd.OutOrStdout(), Log: log, KeepRunning: keep})
			if err != nil {
				return err
			}
			if len(res.Mismatches) > 0 {
				return fmt.Errorf("demo: %d count(s) differ from the known truth", len(res.Mismatches))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-running", false, "stay up after the report: publish more, watch the status page")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the worker's info logs")
	return cmd
}
