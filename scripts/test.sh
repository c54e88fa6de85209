#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit and integration tests, including the
# end-to-end test that starts the real binary. Installs nothing beyond what cargo fetches.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
