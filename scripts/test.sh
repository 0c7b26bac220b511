#!/usr/bin/env bash
# Runs every test of ringecho, installing what the tests need when missing.
# Usage: scripts/test.sh        (from anywhere; takes about 5 minutes)
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

echo "test.sh: formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "test.sh: unit, integration and conformance tests"
cargo test --workspace
