package testenv

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, dsn, want string
	}{
		{"url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/t_x?sslmode=disable"},
		{"url without path", "postgresql://u:p@h:1", "postgresql://u:p@h:1/t_x"},
		{"keyword value", "host=h port=1 dbname=postgres", "host=h port=1 dbname=postgres dbname=t_x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := withDatabase(tt.dsn, "t_x")
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestUniqueName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^t_[a-z0-9_]+_[0-9a-f]{12}$`)
	t.Run("Mixed/Case and spaces "+strings.Repeat("long", 40), func(t *testing.T) {
		t.Parallel()
		a, b := uniqueName(t, "t_", 63), uniqueName(t, "t_", 63)
		require.NotEqual(t, a, b)
		for _, n := range []string{a, b} {
			require.LessOrEqual(t, len(n), 63)
			require.Regexp(t, valid, n)
			require.True(t, strings.HasPrefix(n, "t_testuniquename_mixed_case_and_spaces_long"), n)
		}
	})
}
