#!/usr/bin/env bash
# saga bench e2e against REAL SGLang replicas on a GPU machine (unattended).
#
#   bench/gpu/run.sh [OUT_DIR]          # env: GPUS (default: all), REPLICAS_PER_GPU (1),
#                                       #      MEM_FRACTION (0.85, shared when REPLICAS_PER_GPU > 1),
#                                       #      SHAPE (8b|tiny), SESSIONS, LOAD, SIZE, WORKLOADS,
#                                       #      SYSTEMS (default: all), SGLANG_SPEC, EXTRA_SGLANG_ARGS,
#                                       #      MODEL_DIR (skip make_model), LOAD_FORMAT (dummy),
#                                       #      OFFLINE_BUNDLE (folder of offline_bundle.py parts),
#                                       #      OFFLINE_SITE (where they are unpacked)
#
# 1. installs sglang (pip, pinned by SGLANG_SPEC) if it is missing, or, on a machine without a
#    package index, unpacks OFFLINE_BUNDLE (bench/gpu/offline_bundle.py) and installs nothing;
# 2. writes a local model folder (bench/gpu/make_model.py: Llama config + word-level
#    tokenizer; weights are dummy, so no model hub is needed);
# 3. starts one `python -m sglang.launch_server` per GPU with --load-format dummy,
#    --enable-metrics, and --enable-session-radix-cache / --enable-priority-scheduling when this
#    SGLang version has them (checked in --help, never assumed);
# 4. runs `saga bench e2e --replica-url ...` (every system: SAGA, SAGA+Redis, the real
#    sglang-router cache_aware/round_robin/manual; caches flushed between systems) at time
#    scale 1 (real GPUs run in real time);
# 5. writes everything (report, server logs, nvidia-smi, pip freeze) under OUT_DIR and stops
#    the servers on exit.
#
# 4a. before the benchmark, bench/gpu/probe.py checks replica 0 with SAGA's own parsers: its
#     /server_info, a 3-turn session under a top-level session_id (the prefix must be reused),
#     /v1/loads, /metrics and its KV events; the run stops there if a check fails.
#
# Status (2026-11-24, docs/bench.md "Real SGLang"): what steps 2-4a do was run by hand on one
# H100 with SGLang 0.5.17 (installed offline, as bench/gpu/offline_bundle.py now automates;
# bench/results/gpu_probe_2026-11-24.md); the benchmark has not yet completed a run on real
# SGLang, and this script itself has run only with the emulator standing in for SGLang
# (tests/e2e/bench/test_gpu_script.py). On a machine without flashinfer's JIT toolchain or FA3 kernels, pass
# EXTRA_SGLANG_ARGS="--attention-backend triton --sampling-backend pytorch"; adding
# "--cuda-graph-backend-prefill disabled" saves the ~90 s prefill CUDA-graph capture at start.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/bench/results/e2e_gpu_$(date +%Y-%m-%d_%H%M%S)}"
SHAPE="${SHAPE:-8b}"
SESSIONS="${SESSIONS:-32}"
LOAD="${LOAD:-0.8}"
SIZE="${SIZE:-full}"
WORKLOADS="${WORKLOADS:-swe_bench webarena multi_tenant}"
SGLANG_SPEC="${SGLANG_SPEC:-sglang>=0.5.17,<0.6}"
PY="${PYTHON:-python3}"
PER_GPU="${REPLICAS_PER_GPU:-1}"
MEM_FRACTION="${MEM_FRACTION:-0.85}"
# settings are checked before anything is installed or started
[[ "$PER_GPU" =~ ^[1-9][0-9]*$ ]] || { echo "REPLICAS_PER_GPU must be a positive integer, got '$PER_GPU'" >&2; exit 2; }
awk -v f="$MEM_FRACTION" 'BEGIN { exit !(f + 0 == f && f > 0 && f <= 1) }' ||
  { echo "MEM_FRACTION must be a number in (0, 1], got '$MEM_FRACTION'" >&2; exit 2; }
mkdir -p "$OUT/logs"
exec > >(tee -a "$OUT/run.log") 2>&1
echo "date: $(date -Is)  host: $(hostname)  out: $OUT"

cd "$ROOT"
# the checkout's operator/ folder would shadow Python's standard `operator` module from the cwd
export PYTHONSAFEPATH=1
# An offline machine (no package index): OFFLINE_BUNDLE names a folder of part-*.tar.xz from
# bench/gpu/offline_bundle.py; they are unpacked into one site folder put first on PYTHONPATH,
# with this checkout's saga package beside it, so nothing is pip-installed.
if [[ -n "${OFFLINE_BUNDLE:-}" ]]; then
  shopt -s nullglob
  parts=("$OFFLINE_BUNDLE"/part-*.tar.xz)
  shopt -u nullglob
  ((${#parts[@]} > 0)) || { echo "OFFLINE_BUNDLE: no part-*.tar.xz in '$OFFLINE_BUNDLE'"; exit 2; }
  SITE="${OFFLINE_SITE:-/tmp/saga-offline-site}"
  mkdir -p "$SITE/.saga-src"
  for part in "${parts[@]}"; do echo "unpacking $part"; tar xJf "$part" -C "$SITE"; done
  ln -sfn "$ROOT/saga" "$SITE/.saga-src/saga"
  export PYTHONPATH="$SITE:$SITE/.saga-src${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import saga" 2>/dev/null; then "$PY" -m pip install -e ".[dev]"; fi
if ! "$PY" -c "import sglang" 2>/dev/null; then "$PY" -m pip install "$SGLANG_SPEC"; fi
nvidia-smi > "$OUT/nvidia-smi.txt" || true
"$PY" -m pip freeze > "$OUT/pip-freeze.txt"

if [[ -n "${MODEL_DIR:-}" ]]; then
  MODEL="$MODEL_DIR"  # a model folder already on the machine (then perhaps LOAD_FORMAT=auto)
else
  MODEL="$OUT/model"
  "$PY" bench/gpu/make_model.py "$MODEL" --shape "$SHAPE"
fi

HELP="$("$PY" -m sglang.launch_server --help 2>/dev/null || true)"
FLAGS=(--load-format "${LOAD_FORMAT:-dummy}" --enable-metrics --host 127.0.0.1 --context-length 262144)
for f in --enable-session-radix-cache --enable-priority-scheduling --constrained-json-disable-any-whitespace; do
  if grep -q -- "$f" <<<"$HELP"; then FLAGS+=("$f"); else echo "note: this sglang has no $f"; fi
done
# Forced tool calls: with a parser that has no structural tag ("pythonic"), SGLang decodes a
# forced tool_choice under the tool's JSON schema and answers `tool_calls` (serving_chat.py),
# which make_model.py's tokenizer can spell; without a parser it answers text, and SAGA would
# see no tool boundary (bench/gpu/check_tool_grammar.py checks the decoding on the CPU).
if grep -q -- "--tool-call-parser" <<<"$HELP"; then FLAGS+=(--tool-call-parser pythonic); fi
# shellcheck disable=SC2206
FLAGS+=(${EXTRA_SGLANG_ARGS:-})

if [[ -z "${GPUS:-}" ]]; then GPUS="$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)"; fi
IFS=',' read -r -a GPU_LIST <<<"$GPUS"
PIDS=()
URLS=()
# wait for the servers only: a bare `wait` would also wait for the log tee, which waits for
# this script to close its output, so the script would never exit
cleanup() {
  if ((${#PIDS[@]} == 0)); then return; fi
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
}
trap cleanup EXIT
wait_healthy() {
  for _ in $(seq 1 180); do curl -sf "$1/health" >/dev/null && return 0; sleep 5; done
  echo "server $1 not healthy after 15 min"; exit 1
}
# REPLICAS_PER_GPU > 1 shares each GPU: SGLang's --mem-fraction-static is a share of the GPU's
# whole memory that must also cover what other processes already hold there (seen on an H100:
# a second server given the first one's fraction refused to start), so the k-th server on a
# GPU gets (k+1)/N of MEM_FRACTION and starts only once the previous one is up. The servers
# then share the GPU's compute too, while `saga bench e2e` sizes LOAD for one H100 per replica
# (the emulator's timing model): with N per GPU, LOAD=0.8/N offers about the intended load.
port=31000
for g in "${GPU_LIST[@]}"; do
  for ((k = 0; k < PER_GPU; k++)); do
    mem=()
    if ((PER_GPU > 1)); then
      mem=(--mem-fraction-static "$(awk -v k="$k" -v n="$PER_GPU" -v f="$MEM_FRACTION" 'BEGIN { printf "%.3f", f * (k + 1) / n }')")
    fi
    # 0.5.17/0.5.18 take --enable-session-radix-cache only on the unified radix tree (default later)
    kv="{\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:$((port + 1000))\"}"  # binds (a host address would connect)
    SGLANG_ENABLE_UNIFIED_RADIX_TREE=1 CUDA_VISIBLE_DEVICES="$g" \
      "$PY" -m sglang.launch_server --model-path "$MODEL" --port "$port" "${FLAGS[@]}" "${mem[@]}" \
      --kv-events-config "$kv" > "$OUT/logs/sglang-gpu$g-$k.log" 2>&1 &
    PIDS+=($!)
    URLS+=(--replica-url "http://127.0.0.1:$port")
    if ((PER_GPU > 1)); then wait_healthy "http://127.0.0.1:$port"; fi
    port=$((port + 1))
  done
done
echo "started ${#PIDS[@]} SGLang servers: ${URLS[*]}"
for u in "${URLS[@]}"; do
  [[ "$u" == --replica-url ]] && continue
  wait_healthy "$u"
done

"$PY" -P bench/gpu/probe.py http://127.0.0.1:31000 --kv-events tcp://127.0.0.1:32000 \
  | tee "$OUT/probe.txt" || { echo "probe failed: see $OUT/probe.txt"; exit 1; }

WL=()
for w in $WORKLOADS; do WL+=(--workload "$w"); done
SYS=()
if [[ -z "${SYSTEMS:-}" ]] && ! command -v redis-server >/dev/null; then
  SYSTEMS=saga,cache_aware,round_robin,manual  # saga-redis needs a local redis-server
  echo "note: no redis-server on PATH, so no saga-redis run: SYSTEMS=$SYSTEMS"
fi
if [[ -n "${SYSTEMS:-}" ]]; then SYS=(--systems "$SYSTEMS"); fi
"$PY" -m saga.cli bench e2e "${WL[@]}" "${SYS[@]}" "${URLS[@]}" --sessions "$SESSIONS" --load "$LOAD" \
  --size "$SIZE" --time-scale 1 --out "$OUT" --no-progress || echo "saga bench e2e exited with $?"
echo "done: $OUT/report.md"
