package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/closedloop/closedloop/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "closedloop",
		Short: "Upload CRM stage changes as deduplicated offline conversions to ad platforms",
		Long: `closedloop reads CRM stage changes and identity captures from Kafka, joins each
conversion to the click IDs and hashed identifiers stored for the lead, and uploads it once,
valued and deduplicated, to Google, Meta, TikTok, Microsoft Advertising and LinkedIn.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: 2, err: err}
	})
	root.AddCommand(
		newSandboxCmd(),
		newVersionCmd(),
		newConfigCmd(),
		newReportCmd(),
		newRunCmd(),
		newDemoCmd(),
		newCRMCmd(),
		newMappingsCmd(),
		newDestinationsCmd(),
		newIdentitiesCmd(),
		newMigrateCmd(),
		newReplayCmd(),
		newIngestCmd(),
	)
	return root
}

// loadConfig reads, expands and validates the config file at path. Secrets come from
// ${ENV_VAR} references, resolved from the process environment here and nowhere else.
func loadConfig(path string) (*config.Config, error) {
	return config.Load(path, os.LookupEnv)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the closedloop version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Println("closedloop", version)
			return nil
		},
	}
}
