#!/usr/bin/env bash
# Everything a GPU machine should check, in one go and within about nine minutes: what `medgan doctor` sees, the
# GPU tests (Testing/Python/test_cuda.py and the other tests marked `gpu`), then `make bench` on CUDA, the
# fit-to-the-scan curve first, every script under a time limit. Results go to OUTDIR: doctor.txt, pytest-gpu.txt,
# bench/ (RESULTS.md and each script's JSON), all of them also packed into results.tgz.
#
#   benchmarks/gpu_check.sh OUTDIR [PYTHON]      (PYTHON defaults to python3; run from the repository root)
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUTDIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out/bench"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MEDGAN_BENCH_OUT="$out/bench"
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

step "the packages the checks need"
"$py" - <<'PY' || exit 2
import importlib.util, sys
# SimpleITK and monai for the engine, nilearn's template for the phantoms, PyWavelets for skimage's noise estimate
missing = [m for m in ("torch", "SimpleITK", "monai", "nilearn", "pywt", "skimage", "scipy", "yaml", "PIL")
           if importlib.util.find_spec(m) is None]
sys.exit(f"missing on this machine: {', '.join(missing)}" if missing else 0)
PY

step "nvidia-smi and medgan doctor"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$out/doctor.txt" 2>&1
"$py" -m MedGANLogic.cli doctor >> "$out/doctor.txt" 2>&1
cat "$out/doctor.txt"

step "GPU tests"
timeout -k 5 100 "$py" -m pytest -m gpu -q -p no:cacheprovider -rs --durations=10 Testing/Python/test_cuda.py \
    Testing/Python/test_doctor.py Testing/Python/test_fast_paths.py > "$out/pytest-gpu.txt" 2>&1
echo "pytest exit $?"
tail -25 "$out/pytest-gpu.txt"

step "benchmarks: fit to the scan"
timeout -k 5 200 "$py" benchmarks/run_all.py --device cuda --only adapt --timeout 190
step "benchmarks: the others, 90 s each at most"
timeout -k 5 240 "$py" benchmarks/run_all.py --device cuda --only floor peers memory warmstart scaling inference \
    --keep --timeout 90
if [ $? -ge 124 ]; then  # stopped before it wrote RESULTS.md: collect what the finished scripts left
    "$py" benchmarks/collect.py "$out/bench" --note "run_all.py was stopped by gpu_check.sh's time limit."
fi
step "done"
tar czf "$out/results.tgz" -C "$out" doctor.txt pytest-gpu.txt bench
sed -n '/^## Targets/,/^## [A-Z][a-z]* [a-z]/p' "$out/bench/RESULTS.md" | cut -c1-400
