#!/usr/bin/env bash
# Creates the virtual environment (once) and installs i2i into it with the given extras.
# Usage: source tools/bootstrap.sh "test,onnx"   -> sets $VENV
set -euo pipefail
VENV="${I2I_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
