#!/usr/bin/env bash
# Fresh machine to test results: install i2i with its test extras and the example third-party
# plugin (a separate package, installed as a user would), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bootstrap.sh "test,onnx,tensorboard,serve"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e examples/i2i-example-plugin
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest -q "$@"
