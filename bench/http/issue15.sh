#!/bin/sh
# Issue 15's measurements in one go (the lead's quiet re-run), each bench interleaving its rows:
#   bench/http/issue15.sh [BASE_COMMIT]      (default: main)
# 1. one request's CPU by phase, main vs this branch (the table in bench/README.md)
# 2. the Flask sample vs Crossbar and gunicorn -k gevent at -c10/-c50/-c200 (p99 at -c50),
#    hello-world server CPU per request, main's geonode as rows geonode-base(-hello)
# 3. WAMP, WebSocket and bridge: main (server "baseline") vs this branch ("geonode")
# Logs: bench/.work/issue15-<time>/*.txt. CROSSBAR defaults to /work/cbvenv/bin/crossbar.
set -eu
cd "$(dirname "$0")/../.."
base=${1:-main}
out=bench/.work/issue15-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/base"
git archive "$base" geonode | tar -x -C "$out/base"
export PYTHONPATH="$PWD"
export CROSSBAR="${CROSSBAR:-/work/cbvenv/bin/crossbar}"
echo "base: $(git rev-parse --short "$base")  branch: $(git rev-parse --short HEAD)  logs: $out"
python3 bench/http/profile_request.py --code "main=$out/base" --code branch=. \
    --json "$out/profile.json" | tee "$out/profile.txt"
python3 bench/http/run.py --connections 10,50,200 --baseline "$out/base" --crossbar "$CROSSBAR" \
    --only geonode,geonode-base,crossbar,gunicorn-gevent,geonode-hello,geonode-base-hello,gunicorn-gevent-hello \
    --startup-tries 1 --no-dev | tee "$out/http.txt"
python3 bench/wamp/run.py --servers geonode,baseline --baseline "$out/base" --scale 0 \
    | tee "$out/wamp.txt"
python3 bench/websocket/run.py --baseline "$out/base" --no-crossbar | tee "$out/websocket.txt"
python3 bench/bridge/run.py --baseline "$out/base" --no-crossbar | tee "$out/bridge.txt"
