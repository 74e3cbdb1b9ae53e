package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseSince reads a --since value: a look-back such as "7d", "36h", "2w" (relative to
// until), or an absolute RFC 3339 time or YYYY-MM-DD date (UTC).
func ParseSince(s string, until time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("--since: empty")
	}
	if t, err := ParseTime(s); err == nil {
		return t, nil
	}
	unit := s[len(s)-1]
	var per time.Duration
	switch unit {
	case 'd':
		per = 24 * time.Hour
	case 'w':
		per = 7 * 24 * time.Hour
	default:
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return time.Time{}, fmt.Errorf("--since: %q is not a look-back like 7d, 36h or 2w, nor an RFC 3339 time or YYYY-MM-DD date", s)
		}
		return until.Add(-d), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s[:len(s)-1]))
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("--since: %q is not a look-back like 7d, 36h or 2w, nor an RFC 3339 time or YYYY-MM-DD date", s)
	}
	return until.Add(-time.Duration(n) * per), nil
}

// ParseTime reads an RFC 3339 time or a YYYY-MM-DD date (midnight UTC).
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or a YYYY-MM-DD date", s)
}

// FormatPeriod prints a period's length for people: whole days as "7 days" or "1 day",
// otherwise days, hours and minutes as "7d 1h", "36h" as "1d 12h", "90m" as "1h 30m";
// seconds are rounded away (a period under a minute prints as "0m").
func FormatPeriod(d time.Duration) string {
	if d < 0 {
		return "-" + FormatPeriod(-d)
	}
	d = d.Round(time.Minute)
	const day = 24 * time.Hour
	if d == day {
		return "1 day"
	}
	if d > day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + " days"
	}
	days, hours, mins := d/day, (d%day)/time.Hour, (d%time.Hour)/time.Minute
	var parts []string
	if days > 0 {
		parts = append(parts, strconv.FormatInt(int64(days), 10)+"d")
	}
	if hours > 0 {
		parts = append(parts, strconv.FormatInt(int64(hours), 10)+"h")
	}
	if mins > 0 || len(parts) == 0 {
		parts = append(parts, strconv.FormatInt(int64(mins), 10)+"m")
	}
	return strings.Join(parts, " ")
}
