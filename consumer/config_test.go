package consumer

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestConfigDefaultsAndYAML(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	doc := `
brokers: [127.0.0.1:19092]
group_id: g
stage_topics:
  - topic: crm.hubspot
    format: hubspot
  - topic: crm.canonical
batch_wait: 50ms
awaiting_timeout: 72h
`
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	require.Empty(t, cfg.Validate("kafka"))
	cfg = cfg.withDefaults()
	require.Equal(t, []StageTopic{{Topic: "crm.hubspot", Format: "hubspot"}, {Topic: "crm.canonical", Format: "canonical"}}, cfg.StageTopics)
	require.Equal(t, 1000, cfg.BatchSize)
	require.Equal(t, 50*time.Millisecond, cfg.BatchWait)
	require.Equal(t, 72*time.Hour, cfg.AwaitingTimeout)
	require.Equal(t, "g-identities", cfg.IdentityGroupID)
	f, ok := cfg.formatOf("crm.hubspot")
	require.True(t, ok)
	require.Equal(t, "hubspot", f)
	_, ok = cfg.formatOf("other")
	require.False(t, ok)
}

func TestConfigDefaultsAreDocumented(t *testing.T) {
	t.Parallel()
	d := DefaultConfig()
	require.Equal(t, 1000, d.BatchSize)
	require.Equal(t, 200*time.Millisecond, d.BatchWait)
	require.Equal(t, 14*24*time.Hour, d.AwaitingTimeout)
}

func TestConfigValidateNamesYAMLPaths(t *testing.T) {
	t.Parallel()
	valid := func() Config {
		c := DefaultConfig()
		c.Brokers = []string{"127.0.0.1:9092"}
		return c
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string
	}{
		{"valid", func(*Config) {}, nil},
		{"no brokers", func(c *Config) { c.Brokers = nil }, []string{"kafka.brokers: at least one broker required"}},
		{"bad broker", func(c *Config) { c.Brokers = []string{"nohost"} }, []string{`kafka.brokers[0]: must be host:port, got "nohost"`}},
		{"no group", func(c *Config) { c.GroupID = "" }, []string{"kafka.group_id: required"}},
		{"no stage topics", func(c *Config) { c.StageTopics = nil }, []string{"kafka.stage_topics: at least one topic required"}},
		{"unknown format", func(c *Config) { c.StageTopics = []StageTopic{{Topic: "a", Format: "zoho"}} },
			[]string{`kafka.stage_topics[0].format: must be one of canonical, hubspot, salesforce, pipedrive, close, attio, got "zoho"`}},
		{"duplicate topic", func(c *Config) { c.StageTopics = []StageTopic{{Topic: "a"}, {Topic: "a"}} },
			[]string{`kafka.stage_topics[1].topic: "a" is already listed at stage_topics[0]`}},
		{"empty topic", func(c *Config) { c.StageTopics = []StageTopic{{Format: "hubspot"}} }, []string{"kafka.stage_topics[0].topic: required"}},
		{"no dead-letter topic", func(c *Config) { c.DeadLetterTopic = "" }, []string{"kafka.dead_letter_topic: required"}},
		{"identity topic is a stage topic", func(c *Config) { c.IdentityTopic = "crm.stage-changes" }, []string{`kafka.identity_topic: "crm.stage-changes" is also a stage topic`}},
		{"dead letters into identities", func(c *Config) { c.DeadLetterTopic = c.IdentityTopic }, []string{"kafka.dead_letter_topic: must differ from identity_topic"}},
		{"start offset", func(c *Config) { c.StartOffset = "middle" }, []string{`kafka.start_offset: must be first or last, got "middle"`}},
		{"batch size", func(c *Config) { c.BatchSize = -1 }, []string{"kafka.batch_size: must be between 1 and 100000, got -1"}},
		{"batch wait", func(c *Config) { c.BatchWait = 2 * time.Minute }, []string{"kafka.batch_wait: must be between 1ms and 1m, got 2m0s"}},
		{"max bytes too small", func(c *Config) { c.MaxBytes = 1000 }, []string{"kafka.max_bytes: must be at least 1049600"}},
		{"min over max", func(c *Config) { c.MinBytes = 32 << 20 }, []string{"kafka.min_bytes: must not exceed max_bytes"}},
		{"awaiting timeout", func(c *Config) { c.AwaitingTimeout = time.Second }, []string{"kafka.awaiting_timeout: must be at least 1m, got 1s"}},
		{"same group twice", func(c *Config) { c.IdentityGroupID = c.GroupID }, []string{"kafka.identity_group_id: must differ from group_id"}},
		{"every problem at once", func(c *Config) { c.Brokers = nil; c.GroupID = ""; c.DeadLetterTopic = "" },
			[]string{"kafka.brokers:", "kafka.group_id:", "kafka.dead_letter_topic:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.modify(&c)
			errs := c.Validate("kafka")
			require.Len(t, errs, len(tt.want), "%v", errs)
			for i, w := range tt.want {
				require.True(t, strings.HasPrefix(errs[i].Error(), w), "error %d = %q, want prefix %q", i, errs[i], w)
			}
		})
	}
}
