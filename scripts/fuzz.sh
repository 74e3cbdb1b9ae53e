#!/usr/bin/env bash
# fuzz.sh [FUZZTIME]: fuzz every Fuzz* target in the module for FUZZTIME (default 10s) each.
# Runs them all, then fails if any failed; a failing input is saved under the package's
# testdata/fuzz/ by `go test`, where it becomes a regression case of the plain test run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

fuzztime=${1:-10s}
GO=${GO:-go}
failed=()
count=0
# Every "func FuzzXxx(" in a _test.go file outside testdata and dot directories.
while IFS=: read -r file name; do
	pkg=./$(dirname "${file#./}")
	count=$((count + 1))
	log "fuzz $pkg $name for $fuzztime"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"; then
		failed+=("$pkg $name")
	fi
done < <(find . -name '*_test.go' -not -path '*/testdata/*' -not -path './.*' -print0 |
	xargs -0 grep -oH '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/' | sort)

log "fuzzed $count targets"
if [[ ${#failed[@]} -gt 0 ]]; then
	log "failed:"
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
