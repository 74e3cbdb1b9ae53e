package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a configuration file",
	}
	var path string
	check := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config file: exit 0 and a summary, or exit 1 and every error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			m, err := cfg.CompileMappings()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: ok\n", path)
			fmt.Fprintf(out, "  store:        %s\n", cfg.Store.Driver)
			fmt.Fprintf(out, "  kafka:        %s (group %s)\n", strings.Join(cfg.Kafka.Brokers, ","), cfg.Kafka.GroupID)
			fmt.Fprintf(out, "  destinations: %d\n", len(cfg.Destinations))
			for _, name := range cfg.DestinationNames() {
				d := cfg.Destinations[name]
				state := ""
				if !d.IsEnabled() {
					state = ", disabled"
				}
				if d.APIVersion != "" {
					state = ", API " + d.APIVersion + state
				}
				fmt.Fprintf(out, "    %s (%s%s)\n", name, d.Platform, state)
			}
			fmt.Fprintf(out, "  mappings:     %d rules, version %s\n", len(cfg.Mappings), m.Version())
			for _, w := range cfg.Warnings(time.Now()) {
				fmt.Fprintf(out, "  warning:      %s\n", w)
			}
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "config file (YAML)")
	_ = check.MarkFlagRequired("config")
	cmd.AddCommand(check)
	return cmd
}
