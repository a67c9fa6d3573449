#!/usr/bin/env bash
# Wheels of the project's dependencies other than torch, for an offline GPU machine that has
# PyTorch (and numpy, scipy, h5py, matplotlib, scikit-image) but no package index:
#
#   bash scripts/offline_wheels.sh [python version, default 3.12] [folder, default .whl]
#
# and there, from the project root:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. python3 scripts/device_check.py out=<folder>
#
# pydicom-data (34 MB) is left out: the CT tasks read the slices cached under data/ (build them
# here with `python scripts/make_data.py ct` and carry data/ along).
set -euo pipefail
version=${1:-3.12}
dest=${2:-.whl}
mkdir -p "$dest"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform any)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d "$dest" \
    deepinv==0.5.0 natsort sigpy==0.1.27 PyWavelets hydra-core==1.3.8 omegaconf==2.3.0 nibabel nilearn pydicom \
    hydra-submitit-launcher submitit
# antlr4-python3-runtime 4.9.3 (hydra's parser) is published as a source archive only
python3 -m pip wheel --quiet --no-deps -w "$dest" antlr4-python3-runtime==4.9.3
ls -l "$dest"
