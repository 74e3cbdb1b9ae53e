package consumer

import (
	"fmt"
	"strings"
	"time"

	"github.com/closedloop/closedloop/crm"
)

// Config is the `kafka` section of the config file. Start from DefaultConfig, decode the
// YAML over it, then call Validate.
type Config struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// GroupID is the consumer group of the stage-change reader. The identity reader joins
	// IdentityGroupID (default GroupID + "-identities") so a rebalance of one never stalls
	// the other.
	GroupID         string `yaml:"group_id"`
	IdentityGroupID string `yaml:"identity_group_id"`
	// ClientID names this process to the brokers (default "closedloop").
	ClientID string `yaml:"client_id"`
	// StageTopics are the topics carrying CRM stage changes, each with the format its
	// messages are in unless a message's closedloop-format header says otherwise.
	StageTopics []StageTopic `yaml:"stage_topics"`
	// IdentityTopic carries identity captures; "" disables the identity reader.
	IdentityTopic string `yaml:"identity_topic"`
	// DeadLetterTopic receives every message that cannot be decoded or is invalid, with
	// the original key, value and headers plus closedloop-error-* headers. It must accept
	// messages as large as the source topics do (max.message.bytes).
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// StartOffset is where a group with no committed offset starts: "first" or "last".
	StartOffset string `yaml:"start_offset"`

	// BatchSize is the most messages processed (and written in one store transaction)
	// together; BatchWait the longest a partial batch waits for more.
	BatchSize int           `yaml:"batch_size"`
	BatchWait time.Duration `yaml:"batch_wait"`
	// MinBytes and MaxBytes bound one fetch request per partition.
	MinBytes int `yaml:"min_bytes"`
	MaxBytes int `yaml:"max_bytes"`

	// AwaitingTimeout is how long a conversion may wait for an identifier before the
	// sweeper marks it unmatched; SweepInterval is how often the sweeper runs.
	AwaitingTimeout time.Duration `yaml:"awaiting_timeout"`
	SweepInterval   time.Duration `yaml:"sweep_interval"`

	// IdentitiesFirst (default true) makes the stage reader hold back, up to a second per
	// batch, while the identity reader is several batches behind and moving, so that a
	// backlog of captures is stored before the stage changes that join on them (see
	// yield.go).
	IdentitiesFirst *bool `yaml:"identities_first"`
}

// identitiesFirst reads IdentitiesFirst with its default.
func (c Config) identitiesFirst() bool { return c.IdentitiesFirst == nil || *c.IdentitiesFirst }

// StageTopic is one topic of stage changes and the format its messages are in.
type StageTopic struct {
	Topic  string `yaml:"topic"`
	Format string `yaml:"format"` // canonical (default) | hubspot | salesforce | pipedrive | close
}

// Defaults.
const (
	DefaultBatchSize       = 1000
	DefaultBatchWait       = 200 * time.Millisecond
	DefaultMinBytes        = 1
	DefaultMaxBytes        = 16 << 20
	DefaultAwaitingTimeout = 14 * 24 * time.Hour
	DefaultSweepInterval   = time.Minute
)

// DefaultConfig returns the configuration a file starts from. Brokers has no default.
func DefaultConfig() Config {
	return Config{
		GroupID:         "closedloop",
		ClientID:        "closedloop",
		StageTopics:     []StageTopic{{Topic: "crm.stage-changes", Format: crm.FormatCanonical}},
		IdentityTopic:   "identity.captures",
		DeadLetterTopic: "closedloop.dead-letters",
		StartOffset:     "first",
		BatchSize:       DefaultBatchSize,
		BatchWait:       DefaultBatchWait,
		MinBytes:        DefaultMinBytes,
		MaxBytes:        DefaultMaxBytes,
		AwaitingTimeout: DefaultAwaitingTimeout,
		SweepInterval:   DefaultSweepInterval,
	}
}

// withDefaults fills zero values, so a Config built in code (tests, the demo) needs only
// what differs.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.GroupID == "" {
		c.GroupID = d.GroupID
	}
	if c.IdentityGroupID == "" {
		c.IdentityGroupID = c.GroupID + "-identities"
	}
	if c.ClientID == "" {
		c.ClientID = d.ClientID
	}
	if c.StartOffset == "" {
		c.StartOffset = d.StartOffset
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.BatchWait == 0 {
		c.BatchWait = d.BatchWait
	}
	if c.MinBytes == 0 {
		c.MinBytes = d.MinBytes
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.AwaitingTimeout == 0 {
		c.AwaitingTimeout = d.AwaitingTimeout
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = d.SweepInterval
	}
	topics := make([]StageTopic, len(c.StageTopics))
	for i, t := range c.StageTopics {
		if t.Format == "" {
			t.Format = crm.FormatCanonical
		}
		topics[i] = t
	}
	c.StageTopics = topics
	return c
}

// formatOf returns the configured format of a stage topic, and whether it is one.
func (c Config) formatOf(topic string) (string, bool) {
	for _, t := range c.StageTopics {
		if t.Topic == topic {
			if t.Format == "" {
				return crm.FormatCanonical, true
			}
			return t.Format, true
		}
	}
	return "", false
}

// Validate reports every problem in c, each prefixed with its YAML path under path
// ("kafka.brokers: at least one broker required").
func (c Config) Validate(path string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{path, field}, args...)...))
	}
	if len(c.Brokers) == 0 {
		add("brokers", "at least one broker required")
	}
	for i, b := range c.Brokers {
		host, port, ok := strings.Cut(b, ":")
		if !ok || host == "" || port == "" || strings.ContainsAny(b, " /") {
			add(fmt.Sprintf("brokers[%d]", i), "must be host:port, got %q", b)
		}
	}
	if c.GroupID == "" {
		add("group_id", "required")
	}
	if c.IdentityGroupID != "" && c.IdentityGroupID == c.GroupID {
		add("identity_group_id", "must differ from group_id")
	}
	if len(c.StageTopics) == 0 {
		add("stage_topics", "at least one topic required")
	}
	seen := map[string]int{}
	for i, t := range c.StageTopics {
		p := fmt.Sprintf("stage_topics[%d]", i)
		if t.Topic == "" {
			add(p+".topic", "required")
		} else if j, dup := seen[t.Topic]; dup {
			add(p+".topic", "%q is already listed at stage_topics[%d]", t.Topic, j)
		} else {
			seen[t.Topic] = i
		}
		if t.Format != "" && !knownFormat(t.Format) {
			add(p+".format", "must be one of %s, got %q", strings.Join(crm.Formats, ", "), t.Format)
		}
	}
	if c.DeadLetterTopic == "" {
		add("dead_letter_topic", "required: undecodable messages must go somewhere before their offsets are committed")
	}
	for _, other := range []struct{ field, topic string }{{"identity_topic", c.IdentityTopic}, {"dead_letter_topic", c.DeadLetterTopic}} {
		if _, ok := seen[other.topic]; ok && other.topic != "" {
			add(other.field, "%q is also a stage topic", other.topic)
		}
	}
	if c.IdentityTopic != "" && c.IdentityTopic == c.DeadLetterTopic {
		add("dead_letter_topic", "must differ from identity_topic")
	}
	switch c.StartOffset {
	case "", "first", "last":
	default:
		add("start_offset", "must be first or last, got %q", c.StartOffset)
	}
	if c.BatchSize < 0 || c.BatchSize > 100000 {
		add("batch_size", "must be between 1 and 100000, got %d", c.BatchSize)
	}
	if c.BatchWait < 0 || c.BatchWait > time.Minute {
		add("batch_wait", "must be between 1ms and 1m, got %s", c.BatchWait)
	}
	if c.MinBytes < 0 {
		add("min_bytes", "must not be negative")
	}
	if c.MaxBytes != 0 && c.MaxBytes < crm.MaxPayloadBytes+1024 {
		add("max_bytes", "must be at least %d (a 1 MiB message plus framing), got %d", crm.MaxPayloadBytes+1024, c.MaxBytes)
	}
	if c.MinBytes > 0 && c.MaxBytes > 0 && c.MinBytes > c.MaxBytes {
		add("min_bytes", "must not exceed max_bytes (%d), got %d", c.MaxBytes, c.MinBytes)
	}
	if c.AwaitingTimeout < 0 {
		add("awaiting_timeout", "must be positive, got %s", c.AwaitingTimeout)
	} else if c.AwaitingTimeout != 0 && c.AwaitingTimeout < time.Minute {
		add("awaiting_timeout", "must be at least 1m, got %s", c.AwaitingTimeout)
	}
	if c.SweepInterval < 0 {
		add("sweep_interval", "must be positive, got %s", c.SweepInterval)
	}
	return errs
}

func knownFormat(f string) bool {
	for _, k := range crm.Formats {
		if k == f {
			return true
		}
	}
	return false
}
