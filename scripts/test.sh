#!/usr/bin/env bash
# Runs every test of ringecho, installing what the tests need when missing.
# Usage: scripts/test.sh        (from anywhere; takes about 25 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

# Autobahn|Testsuite's cases, through kosoku (Python 3, Rust inside): kept in
# a virtual environment under target/ so that the system Python is untouched.
if [ -z "${KOSOKU:-}" ]; then
  if command -v kosoku >/dev/null 2>&1; then
    KOSOKU=$(command -v kosoku)
  else
    venv=target/tools/autobahn
    if [ ! -x "$venv/bin/kosoku" ]; then
      echo "test.sh: installing kosoku (Autobahn's conformance cases) into $venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check kosoku
    fi
    KOSOKU=$PWD/$venv/bin/kosoku
  fi
fi
export KOSOKU

# Python packages the tests use: Prometheus's official client, whose
# parser reads /metrics (tests/metrics.rs), PyYAML, which reads the
# Kubernetes manifest (tests/cluster.rs), HdrHistogram's Python port, which
# reads loadgen's interval logs (tests/loadgen.rs), and websockets, the
# foreign echo server loadgen is tested against (tests/loadgen_foreign.rs).
if [ -z "${RINGECHO_TEST_PYTHON:-}" ]; then
  venv=target/tools/python
  if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c "import prometheus_client, yaml, hdrh, websockets" 2>/dev/null; then
    echo "test.sh: installing prometheus_client, PyYAML, hdrhistogram and websockets into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check prometheus_client pyyaml hdrhistogram websockets
  fi
  RINGECHO_TEST_PYTHON=$PWD/$venv/bin/python3
fi
export RINGECHO_TEST_PYTHON

# openssl makes the test certificates for loadgen's wss:// tests.
if ! command -v openssl >/dev/null 2>&1; then
  echo "test.sh: installing openssl (test certificates)"
  apt-get update -qq && apt-get install -y -qq openssl
fi

# The official SignalR client (@microsoft/signalr), run by Node.js.
if ! command -v node >/dev/null 2>&1; then
  echo "test.sh: installing Node.js (for the official SignalR client)"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if [ ! -d tests/signalr/node_modules/@microsoft/signalr ] || [ ! -d tests/signalr/node_modules/@microsoft/signalr-protocol-msgpack ] || [ ! -d tests/signalr/node_modules/ws ]; then
  echo "test.sh: installing @microsoft/signalr, its MessagePack protocol and ws into tests/signalr"
  (cd tests/signalr && npm ci --no-audit --no-fund --silent)
fi
if [ ! -d tests/deflate/node_modules/ws ]; then
  echo "test.sh: installing Node's ws (the permessage-deflate peer) into tests/deflate"
  (cd tests/deflate && npm ci --no-audit --no-fund --silent)
fi

# A real browser for the page tests: Debian's Chromium, driven by playwright-core.
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing Chromium (for the browser tests)"
  apt-get update -qq && apt-get install -y -qq chromium
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test.sh: installing playwright-core into tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

echo "test.sh: formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "test.sh: unit, integration and conformance tests"
cargo test --workspace

echo "test.sh: fuzzing, 20 s per target"
scripts/fuzz.sh 20

# The soak's hold and churn are shortened here (20 s each instead of 60 s) to
# keep the whole run under 30 minutes; the full soak is `scripts/soak.sh`.
echo "test.sh: soak, 10 000 connections, on the io-uring and epoll backends (about 2 minutes)"
SOAK_HOLD=${SOAK_HOLD:-20} SOAK_CHURN=${SOAK_CHURN:-20} scripts/soak.sh io-uring
SOAK_HOLD=${SOAK_HOLD:-20} SOAK_CHURN=${SOAK_CHURN:-20} scripts/soak.sh epoll
