#!/usr/bin/env bash
# Installs autobahn|js for the Node-based interop tests (skipped quietly when npm is absent).
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm not found: autobahn|js tests will be skipped"; exit 0; }
[ -d node_modules/autobahn ] && [ -d node_modules/xhr2 ] && [ -d node_modules/resumablejs ] || npm install --no-audit --no-fund --loglevel=error
