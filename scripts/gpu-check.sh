#!/usr/bin/env bash
# One prepared pass over a real NVIDIA GPU, in one call of under 8 minutes:
#   1. install what the GPU run needs (a CUDA build of torch unless one is there; the project with
#      its ml, serve and test extras; vLLM where its wheel installs), into the Python given;
#   2. `harness sensors` and `harness sensors --check` (NVML's counter against its power);
#   3. idle power: `harness measure -- sleep`;
#   4. a fixed matmul loop (benchmarks/matmul_loop.py) under `harness measure` for 1, 5 and 30 s,
#      and `harness sensors --check` over 1, 5 and 30 s while that loop runs: NVML's energy counter
#      against its integrated instant power, under load;
#   5. suites/gpu-check.yaml (the builtin family on cuda:0; batches 1, 8, 64; fp32, bf16,
#      int8-weight) with its report and `harness check` where that command exists;
#   6. the GPU tests (`pytest -m gpu`);
#   7. suites/gpu-check-vllm.yaml (vLLM at concurrency 1, 8, 32) if vLLM imports.
# Everything goes to one folder, named on the last line printed. Each step has its own time limit
# and a step that fails is logged and the next one runs; the exit status counts the failed steps.
#
#   scripts/gpu-check.sh [--dry-run] [--out DIR] [--wheels DIR] [--no-install]
#
#   --dry-run     the same steps on this CPU with a fake NVIDIA GPU (tests/fakenvml.py), shorter
#                 windows and a cut-down suite on `device: cpu`; installs nothing. Its figures are
#                 of a fake GPU and say so: it checks the script, never the hardware.
#   --out DIR     the output folder (default: gpu-check-<UTC time> under $HARNESS_RESULTS or results/)
#   --wheels DIR  install from this folder of wheels only (a machine without network)
#   --no-install  use the Python as it is
# Environment: PYTHON (default: python3; on a real run a venv .venv-gpu is made beside the project
# with --system-site-packages, so a CUDA torch already installed is kept), GPU_CHECK_SCALE (window
# length factor, default 1; the dry run uses 0.05), GPU_CHECK_ONLY (a case glob for the suite step,
# as `harness run --only`).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dry=0; out=""; wheels=""; install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --no-install) install=0 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$wheels" ] && [ ! -d "$wheels" ]; then
  echo "gpu-check: --wheels $wheels is not a folder" >&2; exit 2
fi

stamp=$(date -u +%Y%m%dT%H%M%S)
out=${out:-${HARNESS_RESULTS:-results}/gpu-check-$stamp}
mkdir -p "$out" || { echo "gpu-check: cannot make $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
log=$out/gpu-check.log
started=$(date +%s)
failed=0

say() { printf '%s\n' "$*" | tee -a "$log"; }
# step NAME LIMIT_S CMD...: run CMD with a time limit, its output in NAME.log and the main log
step() {
  local name=$1 limit=$2; shift 2
  say "== $name (limit ${limit} s): $*"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 40 "$out/$name.log" >>"$log"
  say "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  [ $rc -eq 0 ] || failed=$((failed + 1))
  return $rc
}

if [ $dry -eq 1 ]; then
  scale=${GPU_CHECK_SCALE:-0.05}
  py=${PYTHON:-python3}
  device=cpu
  # every Python process from here on reads the fake GPU (tests/fakegpu/sitecustomize.py)
  export PYTHONPATH="$root/tests/fakegpu:$root/tests:$root${PYTHONPATH:+:$PYTHONPATH}"
  # nothing real is measured: do not wait for, or hold up, a real run's machine lock
  export HARNESS_LOCK_FILE=$out/harness.lock
  say "gpu-check: DRY RUN on the CPU with a fake NVIDIA GPU; no figure here is of real hardware"
else
  scale=${GPU_CHECK_SCALE:-1}
  device=cuda:0
  if [ $install -eq 1 ]; then
    base=${PYTHON:-python3}
    venv=$root/.venv-gpu
    [ -x "$venv/bin/python" ] || "$base" -m venv --system-site-packages "$venv"
    py=$venv/bin/python
    pipargs=(-q)
    [ -n "$wheels" ] && pipargs+=(--no-index --find-links "$wheels")
    if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      step install-torch 300 "$py" -m pip install "${pipargs[@]}" 'torch>=2.2,<2.15'
    fi
    step install-harness 240 "$py" -m pip install "${pipargs[@]}" -e '.[ml,serve,test]'
    "$py" -c 'import vllm' 2>/dev/null || step install-vllm 240 "$py" -m pip install "${pipargs[@]}" vllm \
      || say "vLLM did not install (see install-vllm.log): its serve step is skipped"
  else
    py=${PYTHON:-python3}
  fi
fi
harness=("$py" -m harness)
secs() { "$py" -c "import sys; print(max(0.2, round(float(sys.argv[1]) * $scale, 2)))" "$1"; }

{
  echo "gpu-check $stamp, dry run: $dry"
  "$py" - <<'PY'
import platform, subprocess
print("python", platform.python_version(), platform.machine())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0))
except Exception as e:  # noqa: BLE001
    print("torch: not importable:", e)
try:
    import vllm
    print("vllm", vllm.__version__)
except Exception:
    print("vllm: not installed")
try:
    import pynvml
    pynvml.nvmlInit()
    print("driver", pynvml.nvmlSystemGetDriverVersion(), "name", pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)))
except Exception as e:  # noqa: BLE001
    print("nvml:", e)
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,power.limit,temperature.gpu --format=csv
} >"$out/versions.txt" 2>&1
cat "$out/versions.txt" >>"$log"

step sensors 60 "${harness[@]}" sensors --json
cp "$out/sensors.log" "$out/sensors.json"
step idle 60 "${harness[@]}" measure --json -- sleep "$(secs 5)"

# counter against integrated power under load, and the loop's energy, over three window lengths
for w in 1 5 30; do
  s=$(secs "$w")
  "$py" benchmarks/matmul_loop.py --device "$device" --seconds "$(secs $((w + 3)))" >"$out/load-$w.log" 2>&1 &
  load=$!
  sleep 1
  step "check-$w" $((w + 60)) "${harness[@]}" sensors --check --json --check-s "$s"
  wait $load
  step "measure-$w" $((w + 60)) "${harness[@]}" measure --json -- "$py" benchmarks/matmul_loop.py --device "$device" --seconds "$s"
done

suite=suites/gpu-check.yaml
if [ $dry -eq 1 ]; then
  # the same suite, cut down to run in seconds on a CPU: one model, few steps, device cpu
  suite=$out/gpu-check-dry.yaml
  "$py" - "$root/suites/gpu-check.yaml" "$suite" <<'PY'
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
data["name"] = "gpu-check-dry"
data["hardware"] = [{"name": "cpu", "device": "cpu"}]
data["models"] = [{"name": "tiny-xs", "source": "builtin:tiny-xs"}]
m = data["measurement"]
m.update(idle_s=0, warmup=0, min_repeats=1, max_repeats=1, min_duration_s=0, case_timeout_s=120)
for w in data["workloads"]:
    if w["type"] == "train":
        w.update(steps=10, batch_size=4, seq_len=16)
    if w["type"] == "accuracy":
        w["limit"] = 10
yaml.safe_dump(data, open(sys.argv[2], "w"), sort_keys=False)
PY
fi
only=()
[ -n "${GPU_CHECK_ONLY:-}" ] && only=(--only "$GPU_CHECK_ONLY")
step suite 300 "${harness[@]}" run "$suite" --out "$out/runs" "${only[@]}"
run_dir=$(tail -n 1 "$out/suite.log")
if [ -d "$run_dir" ]; then
  "$py" - "$run_dir" >"$out/energy-per-token.txt" 2>&1 <<'PY'
import sys
from harness import load_results
df = load_results(sys.argv[1])
df = df[(df["workload"] == "infer") & (df["status"] == "ok")]
cols = ["energy_per_token_j", "tokens_per_s", "avg_power_w"]
table = df.groupby(["model", "variant", "batch_size", "energy_method"])[cols].median()
print("median over repetitions; energy_method says how each was obtained")
print(table.to_string())
PY
  cat "$out/energy-per-token.txt" >>"$log"
  if "${harness[@]}" --help 2>/dev/null | grep -q '^  check'; then
    step harness-check 60 "${harness[@]}" check "$run_dir"
  fi
fi

if [ $dry -eq 1 ]; then  # on a CPU every GPU test skips: check only that they are selected
  step pytest-gpu 240 "$py" -m pytest -m gpu -q -p no:cacheprovider --collect-only tests
else
  step pytest-gpu 240 "$py" -m pytest -m gpu -q -p no:cacheprovider tests
fi

if "$py" -c 'import vllm' 2>/dev/null; then
  step vllm 300 "${harness[@]}" run suites/gpu-check-vllm.yaml --out "$out/runs"
else
  say "vLLM is not installed here: the vLLM serve step is skipped"
fi

say "gpu-check: $failed step(s) failed, $(( $(date +%s) - started )) s in all"
echo "$out"
[ $failed -eq 0 ]
