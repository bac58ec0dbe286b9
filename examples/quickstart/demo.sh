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

# The registry: each training run registered a version of breast-cancer.
show models versions breast-cancer
show models alias breast-cancer champion 1
show models alias breast-cancer challenger 2
printf '\n\033[1m$ treadle models promote breast-cancer --from challenger --to champion --require "accuracy >= champion.accuracy"\033[0m\n'
"$treadle" models promote breast-cancer --from challenger --to champion \
    --require "accuracy >= champion.accuracy" || echo "(refused, as the gate says: the champion stays)"

# Serving: a managed deployment that follows champion, canaried with the challenger.
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
show deploy breast-cancer@champion --name breast-cancer-api
"$treadle" deployments serve breast-cancer-api --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    sleep 0.2
done
row=$(.venv/bin/python - <<'PY'
import json
from sklearn.datasets import load_breast_cancer
frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
print(json.dumps({"rows": frame.head(2).to_dict(orient="records")}))
PY
)
printf '\n\033[1m$ curl -X POST http://127.0.0.1:%s/predict -d {"rows": [...]}\033[0m\n' "$port"
curl -s -X POST "http://127.0.0.1:$port/predict" -H 'content-type: application/json' -d "$row"
echo
show deployments canary breast-cancer-api --percent 20 --candidate challenger
sleep 1.5
printf '\n\033[1m$ (20 requests: which versions answered)\033[0m\n'
for _ in $(seq 20); do
    curl -s -X POST "http://127.0.0.1:$port/predict" -H 'content-type: application/json' -d "$row" \
        | .venv/bin/python -c 'import json, sys; print("v%s" % json.load(sys.stdin)["version"])'
done | sort | uniq -c
show deployments rollback breast-cancer-api
show deployments show breast-cancer-api
kill $server
wait $server 2>/dev/null || true
