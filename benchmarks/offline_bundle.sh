#!/usr/bin/env bash
# The packages benchmarks/gpu_check.sh needs beyond PyTorch, bundled for a GPU machine that cannot reach a package
# index (a lent one with PyTorch, CUDA, SciPy, scikit-image and safetensors on it, but no SimpleITK, MONAI,
# PyWavelets or nilearn). Writes DIR (about 40 MB; keep it out of git):
#   sitk.tar.xz       SimpleITK unpacked and packed again with xz (its 53 MB wheel becomes about 28 MB)
#   *.whl             MONAI and PyWavelets
#   nilearn/          the MNI152 files the phantoms are made from (nilearn/datasets/data), taken from this venv
#   install.sh        run there from the repository root:  . DIR/install.sh DIR   (sets PYTHONPATH)
#
#   benchmarks/offline_bundle.sh DIR [PYTHON_VERSION]     (default 3.12: the python3 of the GPU machine)
set -eu
dir=${1:?usage: benchmarks/offline_bundle.sh DIR [PYTHON_VERSION]}
pyver=${2:-3.12}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$tmp" SimpleITK monai PyWavelets
mkdir "$tmp/sitk"
(cd "$tmp/sitk" && "$py" -m zipfile -e "$tmp"/simpleitk-*.whl . && tar cf - . | xz -T0 -9 > "$dir/sitk.tar.xz")
cp "$tmp"/monai-*.whl "$tmp"/pywavelets-*.whl "$dir/"
data=$("$py" -c "import nilearn, os; print(os.path.join(os.path.dirname(nilearn.__file__), 'datasets', 'data'))")
mkdir -p "$dir/nilearn/datasets/data"
: > "$dir/nilearn/__init__.py"  # a data-only stand-in: the phantoms read nilearn's folder, nothing else of it
cp "$data"/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz "$dir/nilearn/datasets/data/"
cat > "$dir/install.sh" <<'SH'
# . DIR/install.sh DIR : unpack the bundle into /tmp/medgan-site and put it on PYTHONPATH
site=/tmp/medgan-site
mkdir -p "$site" && tar xJf "$1/sitk.tar.xz" -C "$site" && \
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$1"/*.whl && \
    cp -r "$1/nilearn" "$site/" && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
SH
du -sh "$dir"
