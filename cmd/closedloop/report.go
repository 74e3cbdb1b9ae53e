package main

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/closedloop/closedloop/internal/enrich"
	"github.com/closedloop/closedloop/internal/report"
	"github.com/closedloop/closedloop/store"
)

func newReportCmd() *cobra.Command {
	var path, since, until, format string
	cmd := &cobra.Command{
		Use:   "report --config FILE [--since 7d] [--until T] [--format table|json|csv]",
		Short: "Print the reconciliation report: CRM outcomes vs uploaded, accepted, rejected",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(report.Formats, format) {
				return usageError("--format: %q is not one of table, json, csv", format)
			}
			end := time.Now().UTC()
			if until != "" {
				t, err := report.ParseTime(until)
				if err != nil {
					return usageError("--until: %v", err)
				}
				end = t
			}
			start, err := report.ParseSince(since, end)
			if err != nil {
				return usageError("%v", err)
			}
			if !end.After(start) {
				return usageError("--since must be before --until")
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return usageError("%v", err)
			}
			if !cfg.Has("store") {
				return usageError("config %s: store: no store section; the report reads the store the worker writes", path)
			}
			if cfg.Store.Driver == store.DriverSQLite {
				if _, err := os.Stat(cfg.Store.Path); err != nil {
					return usageError("config %s: store.path: no SQLite database at %s", path, cfg.Store.Path)
				}
			}
			st, err := store.Open(cmd.Context(), cfg.Store, zap.NewNop())
			if err != nil {
				return fmt.Errorf("open store: %w", err)
			}
			defer st.Close()
			rep, err := report.Build(cmd.Context(), st, report.Options{
				Since: start, Until: end,
				RateChangeThreshold: cfg.Report.RateChangeThreshold,
				SparseWeeklyVolume:  cfg.Report.SparseWeeklyVolume,
			})
			if err != nil {
				return err
			}
			if rep.CRMs, err = enrich.Overview(cmd.Context(), st, cfg.CRMs, time.Now()); err != nil {
				return fmt.Errorf("report: CRM enrichment: %w", err)
			}
			return report.Render(cmd.OutOrStdout(), rep, format)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&since, "since", "7d", "start: a look-back (7d, 36h, 2w) or an RFC 3339 time / YYYY-MM-DD")
	cmd.Flags().StringVar(&until, "until", "", "end: an RFC 3339 time or YYYY-MM-DD (default now)")
	cmd.Flags().StringVar(&format, "format", "table", "table, json or csv")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
