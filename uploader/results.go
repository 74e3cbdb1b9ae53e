package uploader

// AllRows returns n copies of r: the same outcome for every row of a batch.
func AllRows(n int, r RowResult) []RowResult {
	out := make([]RowResult, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// Truncate shortens a platform message to at most n bytes (plus an ellipsis) for a
// row's Detail.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
