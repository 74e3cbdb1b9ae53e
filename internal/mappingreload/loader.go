package mappingreload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/closedloop/closedloop/crm"
)

// FileLoader returns a Loader that reads only the `mappings` section of the config file at
// path (strictly: unknown keys inside it are errors, with their line numbers) and compiles
// it against destinations, the destinations of the RUNNING process (name → target).
//
// Other sections are not read, so an edit elsewhere in the file (or an environment variable
// that is only needed by another section) cannot block a mapping change. Destinations are
// not taken from the file on purpose: a rule naming a destination added to the file since
// start has no dispatcher yet, so it is rejected as unknown until the process restarts.
func FileLoader(path string, destinations map[string]crm.Target) Loader {
	return func() (*crm.Mapping, error) {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("mappings: %w", err)
		}
		rules, err := DecodeMappings(raw)
		if err != nil {
			return nil, fmt.Errorf("mappings in %s: %w", path, err)
		}
		return crm.CompileMappings(rules, destinations)
	}
}

// DecodeMappings decodes the `mappings` section of a whole config document, ignoring the
// other top-level sections and rejecting unknown keys inside the rules.
func DecodeMappings(raw []byte) ([]crm.MappingRule, error) {
	var doc struct {
		Mappings []crm.MappingRule    `yaml:"mappings"`
		Other    map[string]yaml.Node `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return doc.Mappings, nil
}
