#!/usr/bin/env bash
# ftnb's GPU check (issue 28): one prepared command, under 9 minutes on one GPU, that prints JSON. bench/gpu_check.py says what it measures.
#
#   bash bench/gpu_check.sh prepare     here, with the package registries (as in CI): the wheels the GPU machine lacks, at this
#                                       environment's versions, and SmolLM2-135M's config and tokenizer, into .gpu/ (git-ignored, ~20 MiB)
#   bash .gpu/gpu_check.sh              on the GPU machine, from the repository root, with .gpu/ carried there: installs the wheels into
#                                       /tmp/site, builds a random-weight SmolLM2-135M where ftnb finds its embedded model, runs the
#                                       experiments (bench/gpu_check.py run) and tests/test_gpu.py; results in $OUT (gpu_check.json,
#                                       gpu_check.log, test_gpu.log, install.log)
#   bash bench/gpu_check.sh smoke       on a CPU: the same experiments on a tiny stand-in, 1-2 steps each (CUDA-only parts skipped)
#   GPU_CHECK_SMOKE=1 bash .gpu/gpu_check.sh   the GPU machine's path (install, stand-in, run, tests) rehearsed on a CPU, tiny and short
#
# With this workplace's device tool: run(command="bash .gpu/gpu_check.sh", carry=[".gpu"], timeout_s=560).
# PY picks the Python that prepares (default .venv/bin/python, else python3); on the GPU machine it is python3.
# Time caps (seconds, env): STANDIN_S=100, CHECK_S=280 (the experiments' budget), TESTS_S=90: about 8.5 minutes at worst.
# SITE (default /tmp/site) and GPU_CHECK_CACHE (default /tmp/ftnb-cache) are where the wheels and the stand-in's conversion go.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1   # the repository root (this file is in bench/ or .gpu/)
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

case "${1:-run}" in
prepare)
  exec "$PY" bench/gpu_check.py prepare --dest .gpu ;;
smoke)
  exec "$PY" bench/gpu_check.py smoke ;;
run) ;;
*) echo "usage: bash bench/gpu_check.sh [prepare|run|smoke]" >&2; exit 2 ;;
esac

# ---- on the GPU machine
[ -d .gpu/whl ] || { echo "gpu_check: no .gpu/whl here: run 'bash bench/gpu_check.sh prepare' where pip works, and carry .gpu" >&2; exit 1; }
OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"; export OUT
PY=python3; SITE=${SITE:-/tmp/site}; SMOKE=${GPU_CHECK_SMOKE:-}; T0=$SECONDS
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .gpu/whl/*.whl >"$OUT/install.log" 2>&1 \
  || { tail -20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FTNB_CACHE=${GPU_CHECK_CACHE:-/tmp/ftnb-cache} HF_HUB_OFFLINE=1 \
  HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
echo "gpu_check: wheels installed in $((SECONDS - T0)) s"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "gpu_check: no nvidia-smi here"

# the embedded 98 MB GGUF cannot travel: SmolLM2-135M's shape and real tokenizer with random weights, written as the embedded GGUF
timeout "${STANDIN_S:-100}" $PY bench/gpu_check.py standin --smol .gpu/smol --site "$SITE" ${SMOKE:+--tiny} 2>&1 | tee "$OUT/gpu_check.log" | tail -3
[ "${PIPESTATUS[0]}" = 0 ] || { echo "gpu_check: the stand-in model failed (see gpu_check.log)"; exit 1; }
echo "gpu_check: stand-in ready at $((SECONDS - T0)) s"

timeout $(( ${CHECK_S:-280} + 30 )) $PY bench/gpu_check.py run --out "$OUT" --budget "${CHECK_S:-280}" ${SMOKE:+--smoke} >>"$OUT/gpu_check.log" 2>&1
echo "gpu_check: experiments ended (exit $?) at $((SECONDS - T0)) s"
timeout "${TESTS_S:-90}" $PY -m pytest -q -rfEs -p no:cacheprovider tests/test_gpu.py >"$OUT/test_gpu.log" 2>&1
echo "gpu_check: tests/test_gpu.py exit $? at $((SECONDS - T0)) s"; tail -12 "$OUT/test_gpu.log"
cat "$OUT/gpu_check.json"
