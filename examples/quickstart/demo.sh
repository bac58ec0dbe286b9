#!/usr/bin/env bash
# The quickstart, end to end: run, run again from the cache, inspect, compare, trace.
set -euo pipefail
cd "$(dirname "$0")/../.."
treadle=".venv/bin/treadle"
pipeline="examples/quickstart/pipeline.py"

show() { printf '\n\033[1m$ treadle %s\033[0m\n' "$*"; "$treadle" "$@"; }

show run "$pipeline" -p c=0.5 --experiment demo
show run "$pipeline" -p c=0.5 --experiment demo
show run "$pipeline" -p c=0.05 --experiment demo
show runs list --experiment demo --limit 5
read -r latest previous <<<"$("$treadle" runs list --experiment demo --limit 2 -q | xargs)"
show runs show "$latest"
show runs compare "$latest" "$previous"
show lineage "$("$treadle" artifacts list "$latest" --kind model -q | head -n 1)"
show runs logs "$latest" --step split
