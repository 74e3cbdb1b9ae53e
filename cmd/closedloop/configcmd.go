package main

import (
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
			cmd.Printf("%s: ok\n", path)
			cmd.Printf("  store:        %s\n", cfg.Store.Driver)
			cmd.Printf("  kafka:        %v (group %s)\n", cfg.Kafka.Brokers, cfg.Kafka.GroupID)
			cmd.Printf("  destinations: %d\n", len(cfg.Destinations))
			for _, name := range cfg.DestinationNames() {
				d := cfg.Destinations[name]
				_, _ = out.Write([]byte("    " + name + " (" + d.Platform + ")\n"))
			}
			cmd.Printf("  mappings:     %d rules, version %s\n", len(cfg.Mappings), m.Version())
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "config file (YAML)")
	_ = check.MarkFlagRequired("config")
	cmd.AddCommand(check)
	return cmd
}
