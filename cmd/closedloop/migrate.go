package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/closedloop/closedloop/internal/logging"
	"github.com/closedloop/closedloop/store"
)

// newMigrateCmd is `closedloop migrate up|down|status --config FILE`: the store's schema by
// hand, for deployments that set store.migrate_on_start: false.
func newMigrateCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "migrate up|down|status --config FILE",
		Short: "Apply (up), remove (down: drops every closedloop table) or show (status) the store's schema",
		Long: `migrate runs the embedded SQL migrations of the configured store (PostgreSQL or SQLite)
with golang-migrate. "up" applies every pending migration, "down" reverts all of them and so
DROPS EVERY closedloop TABLE AND ITS DATA, "status" prints the dialect, the schema version and
whether a migration failed halfway (dirty). Running up or down with nothing to do succeeds.`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"up", "down", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return usageError("%v", err)
			}
			log, err := logging.New(cfg.Log.Level, cfg.Log.Format, false)
			if err != nil {
				return usageError("log: %v", err)
			}
			defer func() { _ = log.Sync() }()
			storeCfg := cfg.Store
			storeCfg.MigrateOnStart = false
			st, err := store.Open(cmd.Context(), storeCfg, log)
			if err != nil {
				return fmt.Errorf("open store: %w", err)
			}
			defer st.Close()
			if args[0] != "status" {
				if err := st.Migrate(cmd.Context(), args[0]); err != nil {
					return err
				}
			}
			version, dirty, err := st.MigrationVersion(cmd.Context())
			if err != nil {
				return err
			}
			state := "clean"
			if dirty {
				state = "dirty: a migration failed halfway; repair the schema by hand, then force the version"
			}
			cmd.Printf("%s schema version %d (%s)\n", st.Dialect(), version, state)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "config file (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
