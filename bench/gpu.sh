#!/usr/bin/env bash
# One GPU run for OPD Studio (issue 13): about 6 minutes on one H100, each part under its own time limit.
#
#   1. scoring throughput: `score`'s batched path vs a batched forward-pass floor (bench/scoring.py, bf16)
#   2. the training step, ours vs TRL's SDFTTrainer in bf16, with tokens/s and MFU (bench/training.py)
#   3. click→redraw on CUDA: the server's side of a click (bench/click_server.py); from the browser too
#      (bench/ui_latency.py --quick) where Chromium and Playwright are installed
#   4. long rollouts (issue 17): open/click/score at 32k tokens on a random-initialised long-context config of the
#      default architecture (bench/long.py --random-init; the trained model's context is 8k)
#   5. FSDP: two training steps under configs/accelerate/fsdp.yaml (one process per GPU; with one GPU this checks
#      the wrapping, the sharded optimizer step and the gathered save, not the speed-up)
#
# Needs the repository set up (`make setup`, or PY=python with requirements.txt + requirements-bench.txt installed)
# and the default model in the cache (or OPD_STUDIO_MODEL / --model for another one). Writes bench/results/*.json,
# and bench/results/gpu.log with everything printed. A part that fails is reported and the run goes on; the exit
# code is the number of parts that failed.
#
#   bash bench/gpu.sh                 PEAK_TFLOPS=989 bash bench/gpu.sh   (MFU against another peak)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RESULTS=bench/results
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu.log
: > "$LOG"
export PYTHONUNBUFFERED=1 TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false
failed=0

part() {  # part NAME SECONDS COMMAND...: run one part under a time limit, log it, count a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "Loading weights" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - started))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

"$PY" - <<'EOF' 2>&1 | tee -a "$LOG" || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device: bench/gpu.sh is for a GPU machine"
print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda}")
EOF

part scoring 120 "$PY" -m bench.scoring --family all --repeats 3 --batch-size 32
part training 240 "$PY" -m bench.training --steps 6 --rounds 2 ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"}
part click 60 "$PY" -m bench.click_server --clicks 15
if "$PY" -c "import playwright" 2>/dev/null && command -v chromium >/dev/null; then
  part click-browser 120 "$PY" -m bench.ui_latency --quick
else
  echo "== click-browser: skipped (no Chromium/Playwright here); bench/click_server.py timed the server's side" \
    | tee -a "$LOG"
fi

part long-32k 300 "$PY" -m bench.long --lengths 8192 32768 --random-init --device cuda --repeats 1 \
  --out "$RESULTS/long-gpu.json"

# FSDP: the curated set is the demo rollouts' accepted arithmetic hints; the run goes to a scratch store.
work=$(mktemp -d)
"$PY" - "$work" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open("assets/demo_rollouts.jsonl")]
hinted = [r for r in rows if r.get("hints") and r["meta"].get("family") == "arithmetic"][:8]
for r in hinted:
    for h in r["hints"]:
        h["status"] = "accepted"
with open(f"{sys.argv[1]}/curated.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in hinted)
EOF
gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
part fsdp 120 env OPD_STUDIO_DATA="$work/data" "$PY" -m accelerate.commands.launch \
  --config_file configs/accelerate/fsdp.yaml --num_processes "$gpus" \
  -m opd_studio train --data "$work/curated.jsonl" --out "$work/run" --steps 2 --batch-size 4 \
  --drift-threshold none --no-heldout
[ -f "$work/run/run.json" ] && cp "$work/run/run.json" "$RESULTS/gpu-fsdp-run.json"
rm -rf "$work"

echo "== done: $failed part(s) failed; results in $RESULTS (gpu.log, scoring.json, training.json, click_server.json, long-gpu.json)" \
  | tee -a "$LOG"
exit "$failed"
