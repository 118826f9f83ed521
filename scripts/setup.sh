#!/usr/bin/env bash
# Prepares a fresh machine: .venv with the whole stack, dqe in editable mode, Delta jars in ~/.m2,
# and a smoke check that Spark+Delta and the offline embedding model load without network.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
DELTA_VERSION=4.0.1
SCALA_BINARY=2.13

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
# Versions come from constraints.txt (the tested stack). torch first: deepspeed's sdist imports torch at build time,
# so it is built without isolation.
$PIP install -q -c constraints.txt torch
DS_BUILD_OPS=0 $PIP install -q --no-build-isolation -c constraints.txt deepspeed
# `local`: pyspark + delta-spark, which a Databricks runtime provides instead.
$PIP install -q -c constraints.txt -e ".[local,dev]"

# Delta Lake jars into the local Maven repository, which Spark's Ivy chain searches first.
if ! ls ~/.m2/repository/io/delta/delta-spark_${SCALA_BINARY}/${DELTA_VERSION}/*.jar >/dev/null 2>&1; then
  mvn -q dependency:get -Dartifact=io.delta:delta-spark_${SCALA_BINARY}:${DELTA_VERSION}
fi

.venv/bin/python -m dqe.setup_check
echo "setup complete: activate with 'source .venv/bin/activate'"
