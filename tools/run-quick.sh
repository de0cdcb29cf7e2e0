#!/usr/bin/env bash
# Fresh machine to trained pix2pix: install i2i, then train, evaluate and report the quick recipe
# on the bundled facades sample (CPU, under 10 minutes). Extra arguments go to `i2i run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/bootstrap.sh ""
exec "$VENV/bin/i2i" run recipes/facades_quick.toml "$@"
