#!/usr/bin/env bash
# Prepares a fresh machine: .venv with the whole stack, dqe in editable mode, Delta jars in ~/.m2,
# and a smoke check that Spark+Delta and the offline embedding model load without network.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
DELTA_VERSION=4.0.1
SCALA_BINARY=2.13
ANTLR_VERSION=4.13.1  # the ANTLR runtime Delta's SQL parser was built against

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

# Delta Lake jars into the local Maven repository, where dqe.spark.local_delta_jars finds them (Spark's Ivy chain
# also searches it first). Only the jars pyspark does not ship: the transitive closure is Spark itself (~650 MB).
if ! .venv/bin/python -c "import sys; from dqe.spark import local_delta_jars; sys.exit(local_delta_jars() is None)"; then
  for artifact in io.delta:delta-spark_${SCALA_BINARY}:${DELTA_VERSION} io.delta:delta-storage:${DELTA_VERSION} \
                  org.antlr:antlr4-runtime:${ANTLR_VERSION}; do
    mvn -q dependency:get -Dtransitive=false -Dartifact="$artifact"
  done
fi

.venv/bin/python -m dqe.setup_check
echo "setup complete: activate with 'source .venv/bin/activate'"
