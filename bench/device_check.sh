#!/usr/bin/env bash
# One-command device check for a CUDA machine (H100/H200 with its own torch and triton, no package
# registry): install, GPU test tier, GPU benchmarks, tuning, compile gate; every result in OUTDIR.
#
#   bench/device_check.sh [OUTDIR]        OUTDIR defaults to $OUT, else ./device-check-out
#   DEVICE_CHECK_DRY_RUN=1 bench/device_check.sh OUTDIR    the flow on a CPU machine, GPU steps skipped
#
# Each step runs under its own `timeout`; a failing or timed-out step is recorded and the next one
# runs. The steps' budgets add up to under 8 minutes (STEP_SECONDS below). Results (flat, at most 8
# files, names of letters, digits and ._- only):
#   summary.txt   one line per step: name, status (ok / failed rc=N / timeout / skipped), seconds
#   env.txt       date, host, GPU (nvidia-smi), python, torch, triton, numpy, installed sgtriton
#   install.log   pip install of sgtriton and the plugin (--no-deps; carried wheels first, if any)
#   gpu-tests.txt pytest -m gpu with the thorough hypothesis profile
#   bench.txt     python -m bench, short suite (config F: 256^2 batch 1 fp16/fp32 with the CUDA-graph
#                 row, 1024^2 batch 8 fp16 with torch.compile), printed table (JSON: bench-results.json;
#                 written after every case, so a timed-out step keeps the cases it finished)
#   bench-results.json
#   autotune-table.json  the tuned configs of this GPU (sgtriton autotune --export-table)
#   kernels.txt   the performance model of config F 1024^2 batch 8 fp16 with measured times beside it
#                 (sgtriton kernels --model --measure), then the compile gate (default configs)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUTDIR="${1:-${OUT:-./device-check-out}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
export PYTHON="${PYTHON:-python3}"
DRY_RUN="${DEVICE_CHECK_DRY_RUN:-0}"
export SGTRITON_CACHE_DIR="${SGTRITON_CACHE_DIR:-/tmp/sgtriton-device-check-cache}"
export SGTRITON_HYPOTHESIS_PROFILE=thorough

# Per-step wall-clock budgets (seconds); total 475 s < 8 minutes.
declare -A STEP_SECONDS=([env]=30 [install]=50 [gpu-tests]=140 [bench]=110 [autotune]=60 [model]=60 [kernels]=25)

SUMMARY="$OUTDIR/summary.txt"
: >"$SUMMARY"
START_ALL=$SECONDS

record() {  # record NAME STATUS SECONDS
    printf '%-10s %-16s %4ss\n' "$1" "$2" "$3" | tee -a "$SUMMARY"
}

# run_step NAME LOGFILE COMMAND... : runs COMMAND under timeout, output to LOGFILE, status to summary.
run_step() {
    local name="$1" log="$2"
    shift 2
    local start=$SECONDS rc
    if declare -F "$1" >/dev/null; then  # a shell function: timeout needs a process to run it in
        timeout --kill-after=10 "${STEP_SECONDS[$name]}" bash -c "$(declare -f "$1"); $1" >>"$OUTDIR/$log" 2>&1
    else
        timeout --kill-after=10 "${STEP_SECONDS[$name]}" "$@" >>"$OUTDIR/$log" 2>&1
    fi
    rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        record "$name" ok "$took"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" timeout "$took"
    elif [ "$rc" -eq 5 ] && [ "$name" = gpu-tests ]; then  # pytest: nothing selected
        record "$name" "no tests rc=5" "$took"
    else
        record "$name" "failed rc=$rc" "$took"
    fi
    return 0
}

skip_step() {  # skip_step NAME REASON LOGFILE
    echo "skipped: $2" >>"$OUTDIR/$3"
    record "$1" skipped 0
}

gpu_present() {
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

# ---- 1. environment: versions and device --------------------------------------------------------
# shellcheck disable=SC2329  # run through run_step (by name, under timeout)
env_report() {
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    echo "host: $(hostname)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm \
        --format=csv || echo "nvidia-smi: not found"
    "$PYTHON" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "numpy", "hypothesis", "pytest", "pytest_benchmark", "safetensors", "click",
             "tqdm", "filelock", "PIL"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__)
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          round(p.total_memory / 2**30, 1), "GiB")
else:
    print("device none (CPU only)")
EOF
}
run_step env env.txt env_report

# ---- 2. install sgtriton and the plugin without a registry ------------------------------------
# shellcheck disable=SC2329  # run through run_step (by name, under timeout)
install() {
    # Carried wheels (see bench/README.md) are installed first, for packages the image lacks.
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --no-index --no-deps .whl/*.whl || return 1
    fi
    "$PYTHON" -m pip install --no-deps --no-build-isolation -e . -e plugins/sgtriton-adaptive-kernel || return 1
    "$PYTHON" -c 'import sgtriton, sgtriton_adaptive_kernel; print("sgtriton", sgtriton.__version__)'
}
if [ "$DRY_RUN" = 1 ]; then
    skip_step install "dry run (the caller's environment is used as is)" install.log
else
    run_step install install.log install
fi

HAVE_GPU=0
gpu_present && HAVE_GPU=1

# ---- 3. the GPU test tier, thorough hypothesis profile -----------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    run_step gpu-tests gpu-tests.txt "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider --timeout=130 \
        -o addopts="-ra --benchmark-disable"
else
    # Off a GPU the tier must collect (and skip) cleanly: that much of the step still runs.
    run_step gpu-tests gpu-tests.txt "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider --collect-only \
        -o addopts="-ra --benchmark-disable"
fi

# ---- 4. GPU benchmarks: the short suite of python -m bench --------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    run_step bench bench.txt "$PYTHON" -m bench --suite short --device cuda --out "$OUTDIR/bench-tmp"
    if [ -d "$OUTDIR/bench-tmp" ]; then  # keep the folder flat: one JSON of the results
        find "$OUTDIR/bench-tmp" -name '*.json' -exec cat {} + >"$OUTDIR/bench-results.json" 2>/dev/null
        rm -rf "$OUTDIR/bench-tmp"
    fi
else
    run_step bench bench.txt "$PYTHON" -m bench --suite short --list
fi

# ---- 5. tune the generator's kernels and export the table --------------------------------------
if [ "$HAVE_GPU" = 1 ]; then
    run_step autotune autotune.txt "$PYTHON" -m sgtriton.cli autotune --preset stylegan2-f --resolution 256 \
        --batch 1,8 --dtype fp16,fp32 --export-table "$OUTDIR/autotune-table.json"
else
    skip_step autotune "no CUDA device" autotune.txt
fi

# ---- 6. the performance model beside measured times, then the compile gate for this GPU --------
target=90
if [ "$HAVE_GPU" = 1 ]; then
    target="$("$PYTHON" -c 'import torch; p = torch.cuda.get_device_capability(); print(p[0] * 10 + p[1])')"
    run_step model kernels.txt "$PYTHON" -m sgtriton.cli kernels --model --preset stylegan2-f --resolution 1024 \
        --batch 8 --dtype fp16 --target "sm_$target" --measure
else
    run_step model kernels.txt "$PYTHON" -m sgtriton.cli kernels --model --preset stylegan2-f --resolution 64 \
        --batch 2 --dtype fp16 --target sm_90
fi
if [ "$DRY_RUN" = 1 ]; then
    run_step kernels kernels.txt "$PYTHON" -m sgtriton.cli kernels --report --kernel bias_act --default-config \
        --default-variant --target "$target"
else
    run_step kernels kernels.txt "$PYTHON" -m sgtriton.cli kernels --report --default-config --default-variant \
        --target "$target"
fi

# Fold the autotune log into the summary's folder without growing the file count past 8.
if [ -f "$OUTDIR/autotune.txt" ]; then
    { echo "---- autotune log"; cat "$OUTDIR/autotune.txt"; } >>"$OUTDIR/env.txt"
    rm -f "$OUTDIR/autotune.txt"
fi
echo "total $((SECONDS - START_ALL))s (gpu=$HAVE_GPU dry_run=$DRY_RUN)" | tee -a "$SUMMARY"
exit 0
