#!/usr/bin/env bash
# Everything a lent GPU should tell this project, in one command (make device-check).
#
#   scripts/device_check.sh [--dry-run] [OUT]
#
# On a CUDA machine (at most about 9 minutes on one H200): the CUDA-marked tests, the
# benchmark (inference / MAD / full, every fast-path switch side by side, peak memory) at
# three sizes, and a training burst that continues from the shipped weights on data rendered
# on the GPU for BURST_MINUTES, then writes into OUT (at most 8 files, none over 16 MB):
#   summary.json  env, test outcome, the benchmark rows, the burst's last validation record
#   bench.json    the full benchmark records;      tests.log   the CUDA tests' output
#   burst.safetensors, burst_scalars.jsonl         the burst's weights (fp16) and curves
#   check.log     this script's own log
# --dry-run does the same on the CPU at tiny sizes in seconds (the test suite runs it, so
# the script cannot rot). Needs only python3 with torch, numpy, opencv, scikit-image,
# safetensors and tqdm; rosbags and its needs travel as wheels in .whl (make device-wheels).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-${OUT:-out/device}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
PY=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$out/check.log"
: > "$log"
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$log"; }

if compgen -G ".whl/*.whl" > /dev/null; then
  say "installing the carried wheels (.whl)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$work/site" .whl/*.whl >> "$log" 2>&1 || say "wheel install failed"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ $dry = 1 ]; then
  device=cpu; sizes=(64x128); frames=2; burst_minutes=0.02
  burst=(--size 64x128 --max-disparity 24 --batch 1 --validation-pairs 1 --validate-every 2)
  test_filter=(-m cuda --co -q)   # collection only: there is no GPU to run them on
else
  device=cuda; sizes=(320x1216 480x640 720x1280); frames=${BENCH_FRAMES:-30}
  burst_minutes=${BURST_MINUTES:-4}
  burst=(--size 320x960 --crop 256x640 --max-disparity 160 --batch 16 --validation-pairs 16
         --validate-every 500 --amp auto --channels-last)
  test_filter=(-m cuda -q)
fi

say "environment"
"$PY" - > "$work/env.json" 2>> "$log" <<'PY' || say "environment probe failed"
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "machine": platform.machine()}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                bf16=torch.cuda.is_bf16_supported())
print(json.dumps(info))
PY
cat "$work/env.json" | tee -a "$log"

say "CUDA tests"
"$PY" -m pytest "${test_filter[@]}" -p no:cacheprovider test > "$out/tests.log" 2>&1
tests_rc=$?
tail -n 3 "$out/tests.log" | tee -a "$log"

say "benchmark on $device: ${sizes[*]}"
size_args=()
for size in "${sizes[@]}"; do size_args+=(--size "$size"); done
"$PY" -m stereo_adapt_ros bench --device "$device" --weights synthetic --compare --compile \
    --frames "$frames" --warmup 3 "${size_args[@]}" --json "$out/bench.json" >> "$log" 2>&1
bench_rc=$?
say "benchmark exit $bench_rc"

say "training burst: $burst_minutes min from the shipped weights"
"$PY" -m stereo_adapt_ros train "$work/burst" --weights synthetic --device "$device" \
    --steps 1000000 --time-limit "$burst_minutes" --photos builtin --photo-ratio 0.5 \
    --lr 1e-4 --warmup 200 "${burst[@]}" >> "$log" 2>&1
burst_rc=$?
say "burst exit $burst_rc"
[ -f "$work/burst/madnet_synthetic.safetensors" ] && \
  cp "$work/burst/madnet_synthetic.safetensors" "$out/burst.safetensors"
[ -f "$work/burst/scalars.jsonl" ] && cp "$work/burst/scalars.jsonl" "$out/burst_scalars.jsonl"

"$PY" - "$out" "$work/env.json" "$tests_rc" "$bench_rc" "$burst_rc" "$dry" <<'PY'
import json, sys
from pathlib import Path
out, env, tests_rc, bench_rc, burst_rc, dry = sys.argv[1:]
out = Path(out)
summary = {"dry_run": dry == "1", "env": json.loads(Path(env).read_text() or "{}"),
           "exit": {"tests": int(tests_rc), "bench": int(bench_rc), "burst": int(burst_rc)}}
bench = out / "bench.json"
if bench.exists():
    records = json.loads(bench.read_text())["results"]
    summary["bench"] = [{"size": "x".join(map(str, r["size"])), "variant": name,
                         **{f"{m}_ms": row[m]["median_ms"] for m in ("none", "mad", "full")},
                         "ratio_mad": row["ratio_mad"], "ratio_full": row["ratio_full"]}
                        for r in records for name, row in r["variants"].items()]
scalars = out / "burst_scalars.jsonl"
if scalars.exists() and scalars.read_text().strip():
    summary["burst_last"] = json.loads(scalars.read_text().strip().splitlines()[-1])
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary)[:4000])
PY
say "done: $(ls "$out" | tr '\n' ' ')"
[ "$bench_rc" = 0 ] && [ "$burst_rc" = 0 ]
