#!/usr/bin/env bash
# The wheel as a user gets it: build the wheel and the sdist, install the wheel (not editable) into
# a clean virtual environment, and run the main commands from a folder outside the checkout.
# Usage: bash tools/wheel-check.sh   (CI runs it after the test suite)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/i2i-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
py="${PYTHON:-python3}"
pip_q=(--quiet --disable-pip-version-check)

echo "== build the wheel and the sdist"
"$py" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip install "${pip_q[@]}" build wheel "setuptools>=64"
"$work/build-env/bin/python" -m build --no-isolation --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
ls -l "$work/dist"

echo "== install the wheel into a clean environment"
"$py" -m venv "$work/env"
"$work/env/bin/python" -m pip install "${pip_q[@]}" "$work"/dist/i2i-*.whl
i2i="$work/env/bin/i2i"
mkdir -p "$work/outside" && cd "$work/outside"   # nothing of the checkout is importable from here
"$work/env/bin/python" - <<'PY'
import i2i, i2i.speed, i2i.serve, i2i.diversity  # noqa: E401  every subpackage ships
assert "site-packages" in i2i.__file__, f"i2i came from {i2i.__file__}, not the installed wheel"
print("imported from", i2i.__file__)
PY

echo "== run the commands"
sample="$repo/samples/facades_mini"
"$i2i" list-plugins | grep diversity_sensitive >/dev/null
"$i2i" run "$repo/recipes/facades_quick.toml" --no-progress --set train.max_steps=2 \
    --set "data.root=$sample" --set experiment.output_dir=runs --set eval.max_items=2
"$i2i" eval runs/facades_quick --mode eval --max-items 2
"$i2i" translate runs/facades_quick "$sample/test" translated --aligned --size 128
test "$(find translated -type f | wc -l)" -ge 1
"$i2i" diversity --help >/dev/null
"$i2i" serve --help >/dev/null
echo "wheel check passed"
