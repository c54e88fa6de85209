#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit and integration tests, including the
# end-to-end test that starts the real binary and the Kafka tests, which start real
# brokers (tansu) of their own on free loopback ports. Installs what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo test --workspace --locked "$@"
