#!/usr/bin/env bash
# GPU check for dmnet, run on a lent CUDA machine (Python 3.12 with torch, no registry):
#   OUT=/some/dir bash bench/gpu_check.sh
#   OUT=/some/dir WHEELHOUSE=.whl bash bench/gpu_check.sh     # + the node end to end (step 4)
# 1. a quick CUDA correctness check of the Segmenter (fp32 vs CPU, fp16/bf16 vs fp32, shapes, NaN);
# 2. bench.latency at 1024x1280 in fp16 with --skip-ros (imports no rclpy);
# 3. a short soak on CUDA (GPU memory and RSS flat over 2000 frames);
# 4. with WHEELHOUSE (bench/make_wheelhouse.sh: cp312 rclpy, Fast DDS, messages, rosbags): a venv
#    that sees this Python's torch, then the node end to end through the replay harness on a
#    synthetic bag: lockstep replay at NODE_SIZE and real-time replay at NODE_FPS Hz,
#    publish-to-mask latency p50/p95, frames answered/dropped; then the node end to
#    end with a NODE_FPS Hz publisher at each of E2E_SIZES (bench/node_latency.py): p50/p95 and
#    each stage's share of the node's time per frame;
# then one final table. Everything lands under $OUT. About 3-4 minutes on an H100 (+ step 4).
# Overrides: PYTHON, DEVICE (cuda), SIZE (1024x1280), PRECISION (fp16), FRAMES (30),
# WARMUP (5), SOAK_FRAMES (2000), COMPILE=1 (adds a torch.compile run of the main table),
# SKIP_MODEL=1 (steps 1-3 skipped), NODE_SIZE ($SIZE), NODE_FRAMES (60), NODE_FPS (30),
# NODE_VENV (/tmp/dmnet-node-venv), NODE_WORK (/tmp/dmnet-node: bag and report folders),
# E2E_SIZES ("1024x1280 1080x1920"), E2E_FRAMES (90), E2E_INFERENCE (the model's size there;
# '' = the checkpoint's, 256x320), NODE_PY (a Python with rclpy and torch:
# step 4 without building the venv, e.g. a dry run on a CPU: PYTHON=.venv/bin/python DEVICE=cpu SKIP_MODEL=1
# NODE_PY=.venv/bin/python PRECISION=fp32 bash bench/gpu_check.sh).
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1024x1280}
PRECISION=${PRECISION:-fp16}
FRAMES=${FRAMES:-30}
WARMUP=${WARMUP:-5}
SOAK_FRAMES=${SOAK_FRAMES:-2000}
SKIP_MODEL=${SKIP_MODEL:-0}
WHEELHOUSE=${WHEELHOUSE:-}
NODE_SIZE=${NODE_SIZE:-$SIZE}
NODE_FRAMES=${NODE_FRAMES:-60}
NODE_FPS=${NODE_FPS:-30}
NODE_VENV=${NODE_VENV:-/tmp/dmnet-node-venv}
NODE_WORK=${NODE_WORK:-/tmp/dmnet-node}
NODE_PY=${NODE_PY:-}
E2E_SIZES=${E2E_SIZES:-1024x1280 1080x1920}
E2E_FRAMES=${E2E_FRAMES:-90}
E2E_INFERENCE=${E2E_INFERENCE:-}
mkdir -p "$OUT"
status=0

echo "== machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$PY" -c 'import torch, torchvision, cv2; print("torch", torch.__version__, "torchvision",
torchvision.__version__, "cv2", cv2.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"

if [[ "$SKIP_MODEL" != "1" ]]; then
echo "== correctness (Segmenter on $DEVICE)"
if ! timeout 240 "$PY" -m bench.gpu_correctness --device "$DEVICE" \
    --json "$OUT/gpu_correctness.json" 2>&1 | tee "$OUT/gpu_correctness.txt"; then
  echo "correctness check FAILED"; status=1
fi

echo "== latency ($SIZE, $PRECISION)"
if ! timeout 420 "$PY" -m bench.latency --device "$DEVICE" --precision "$PRECISION" \
    --size "$SIZE" --frames "$FRAMES" --warmup "$WARMUP" --skip-ros \
    --json "$OUT/gpu_latency.json" --plot "$OUT/gpu_latency.png" 2>&1 \
    | tee "$OUT/gpu_latency.txt"; then
  echo "latency run FAILED"; status=1
fi

if [[ "${COMPILE:-0}" == "1" ]]; then
  echo "== latency with torch.compile ($SIZE, $PRECISION, main table only)"
  timeout 420 "$PY" -m bench.latency --device "$DEVICE" --precision "$PRECISION" \
    --size "$SIZE" --frames "$FRAMES" --warmup "$WARMUP" --skip-ros --no-sweeps --compile \
    --json "$OUT/gpu_latency_compile.json" 2>&1 | tee "$OUT/gpu_latency_compile.txt" \
    || { echo "compiled latency run FAILED"; status=1; }
fi

echo "== soak ($SOAK_FRAMES frames on $DEVICE)"
if ! timeout 240 "$PY" -m bench.soak --device "$DEVICE" --precision "$PRECISION" \
    --frames "$SOAK_FRAMES" --settle 300 --json "$OUT/gpu_soak.json" 2>&1 \
    | grep -v '^INFO' | tee "$OUT/gpu_soak.txt"; then
  echo "soak FAILED"; status=1
fi

fi   # SKIP_MODEL

if [[ -n "$WHEELHOUSE" || -n "$NODE_PY" ]]; then
  if [[ -n "$NODE_PY" ]]; then
    VPY=$NODE_PY; venv_ok=1
  else
    echo "== node venv ($NODE_VENV: this Python's torch + the wheels of $WHEELHOUSE, offline)"
    venv_ok=0
    bash bench/node_venv.sh "$PY" "$WHEELHOUSE" "$NODE_VENV" 2>&1 | tee "$OUT/node_venv.txt" \
      && venv_ok=1
    VPY=$NODE_VENV/bin/python
  fi
  if [[ $venv_ok != 1 ]]; then
    echo "node venv FAILED"; status=1
  else
    rm -rf "$NODE_WORK"
    mkdir -p "$NODE_WORK"
    echo "== synthetic bag ($NODE_FRAMES frames at $NODE_SIZE, $NODE_FPS fps)"
    timeout 600 "$VPY" -m dmnet_ros.make_bag --synth --seed 7 --frames "$NODE_FRAMES" \
        --size "$NODE_SIZE" --fps "$NODE_FPS" --out "$NODE_WORK/bag" --no-progress \
        || { echo "make_bag FAILED"; status=1; }
    # The node on $DEVICE at the frames' own size; reports land in NODE_WORK (many files), the
    # two report.json files are copied to $OUT.
    for mode in lockstep rt; do
      if [[ $mode == lockstep ]]; then flags=(--lockstep); else flags=(--rate 1.0); fi
      echo "== replay $mode ($NODE_SIZE on $DEVICE, $PRECISION)"
      if timeout 900 "$VPY" -m dmnet_ros.replay --bag "$NODE_WORK/bag" \
          --out "$NODE_WORK/replay_$mode" "${flags[@]}" --device "$DEVICE" \
          --inference-size "$NODE_SIZE" --node-param "precision:=$PRECISION" \
          --timeout 120 --no-video --no-progress 2>&1 | tee "$OUT/node_$mode.txt"; then
        cp "$NODE_WORK/replay_$mode/report.json" "$OUT/node_$mode.json"
      else
        echo "replay $mode FAILED (node log: $NODE_WORK/replay_$mode/node.log)"
        tail -n 20 "$NODE_WORK/replay_$mode/node.log" 2>/dev/null || true
        status=1
      fi
    done
    # End to end at camera sizes with a NODE_FPS Hz publisher: p50/p95 and stage shares.
    for size in $E2E_SIZES; do
      echo "== node end to end ($size at $NODE_FPS Hz on $DEVICE, $PRECISION)"
      timeout 600 "$VPY" bench/node_latency.py --device "$DEVICE" --precision "$PRECISION" \
          --size "$size" --rate "$NODE_FPS" --frames "$E2E_FRAMES" --warmup 10 \
          --startup-timeout 300 ${E2E_INFERENCE:+--inference-size "$E2E_INFERENCE"} \
          --json "$OUT/node_e2e_$size.json" 2>&1 \
          | tee "$OUT/node_e2e_$size.txt" || { echo "node end to end $size FAILED"; status=1; }
    done
  fi
fi

echo "== summary"
"$PY" - "$OUT" <<'PYEOF' || status=1
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None
c, lat, soak = load('gpu_correctness.json'), load('gpu_latency.json'), load('gpu_soak.json')
node = {m: load(f'node_{m}.json') for m in ('lockstep', 'rt')}
if c:
    print(f"correctness on {c['machine']['cuda_device']}: {'PASS' if c['ok'] else 'FAIL'}")
if lat:
    print(f"latency @ {lat['size']} {lat['precision']} on {lat['machine']['cuda_device']}")
    print(f"{'variant':<12} {'median ms':>10} {'p95 ms':>8} {'FPS':>8} {'x backbone':>11}")
    for name, key in (('backbone', 'backbone_ms'), ('local_only', 'local_only_ms'),
                      ('global_only', 'global_only_ms'), ('dmnet', 'dmnet_ms'),
                      ('flow', 'flow_baseline_ms'), ('dis', 'dis_baseline_ms')):
        print(f"{name:<12} {lat[key]:>10.2f} {lat[key.replace('_ms', '_p95_ms')]:>8.2f} "
              f"{lat['fps'][name]:>8.1f} {lat['ratio_to_backbone'][name]:>11.2f}")
    print('targets:', lat['targets'])
    print('cuda peak MiB:', lat['peak_memory'].get('cuda_max_allocated_mb'))
if soak and 'model' in soak:
    m = soak['model']
    print(f"soak {m['frames']} frames: RSS {m['rss']['rss_mb_start']} -> {m['rss']['rss_mb_end']}"
          f" MiB, CUDA {m.get('cuda', {}).get('cuda_allocated_mb_start')} -> "
          f"{m.get('cuda', {}).get('cuda_allocated_mb_end')} MiB, bank {m['bank_size_end']}")
if any(node.values()):
    print('node end to end (replay harness; latency = mask received - frame published)')
    print(f"{'mode':<10} {'size':>10} {'sent':>5} {'answered':>8} {'dropped':>7} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'answered/s':>10}")
    for m, r in node.items():
        if r:
            lat_ms, size = r['latency_ms'], r['node']['inference_size']
            fps = r['answered_fps']
            label = 'lockstep' if m == 'lockstep' else f"rate {r['rate']:g}x"
            print(f"{label:<10} {'x'.join(map(str, size or [])):>10} {r['frames_sent']:>5} "
                  f"{r['frames_answered']:>8} {r['frames_dropped']:>7} "
                  f"{lat_ms['p50'] or 0:>8.1f} {lat_ms['p95'] or 0:>8.1f} {fps or 0:>10.1f}")
e2e = sorted(out.glob('node_e2e_*.json'))
if e2e:
    print('node end to end at camera sizes (bench/node_latency.py; mask received - stamp)')
    print(f"{'input':>10} {'model':>8} {'Hz':>4} {'sent':>5} {'masks':>5} {'p50 ms':>8} "
          f"{'p95 ms':>8}  stage shares of the node's time per frame")
    for path in e2e:
        r = json.loads(path.read_text())
        shares = ', '.join(f'{k} {v:.0%}' for k, v in
                           sorted(r['stage_share'].items(), key=lambda kv: -kv[1]) if v >= 0.005)
        print(f"{r['input_size']:>10} {r['inference_size']:>8} {r['rate_hz']:>4g} "
              f"{r['frames_sent']:>5} {r['masks_received']:>5} {r['e2e_latency_ms_p50']:>8.1f} "
              f"{r['e2e_latency_ms_p95']:>8.1f}  {shares}")
PYEOF
exit $status
