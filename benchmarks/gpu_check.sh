#!/usr/bin/env bash
# The prepared GPU check of pyromm (benchmarks/gpu_check.py): under 8 minutes on one H100, everything under $OUT
# (gpu_check.json, gpu_check.md, gpu_check.log).
#
# 1. Once, on a CPU, in the repository root (the folder is ignored by git; about 20 MiB):
#      python benchmarks/gpu_check.py prepare --out .gpu-check --data-root DATA
#    DATA is the offline data folder holding mnist/ and polymnist_backgrounds/. It copies MNIST and the PolyMNIST
#    backgrounds (the GPU machine gets no shared/ folder and no network), trains the coherence classifiers and
#    builds wheels of pyro-ppl, pyro-api and nflows (missing there).
# 2. On the GPU machine, through the device tool:
#      run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-check"], timeout_s=540)
#    Options pass through to `gpu_check.py run`: --budget SECONDS (default 420: the parts' total; each part is
#    killed 15 s past its share), --parts data step_ratios mmvm_epoch grid final_runs, --data-root DIR (default
#    .gpu-check/data).
# Smoke test on a CPU (about a minute): OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh --smoke --device cpu
set -uo pipefail
export PYTORCH_NVML_BASED_CUDA_CHECK=1  # torch.cuda.is_available() must not initialise CUDA before the parts fork
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the report goes to}"
PYTHON=${PYTHON:-python3}
PREPARED=${GPU_CHECK_PREPARED:-.gpu-check}
mkdir -p "$OUT"
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('pyro') and u.find_spec('nflows')))"; then
    if ! ls "$PREPARED"/wheels/*.whl >/dev/null 2>&1; then
        echo "pyro or nflows is missing and $PREPARED/wheels holds no wheels: run gpu_check.py prepare first" >&2
        exit 2
    fi
    SITE=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$PREPARED"/wheels/*.whl || exit 2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh${*:+ $*}"
"$PYTHON" benchmarks/gpu_check.py run --prepared "$PREPARED" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=$?
if [ ! -f "$OUT/gpu_check.md" ]; then  # the driver died before its report: say so, with the end of its log
    { echo "# GPU check: no report (gpu_check.py exited with status $status)"; echo; echo '```';
      tail -n 40 "$OUT/gpu_check.log"; echo '```'; } > "$OUT/gpu_check.md"
fi
exit $status
