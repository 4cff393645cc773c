#!/usr/bin/env bash
# GPU check for dmnet, run on a lent CUDA machine (torch 2.11 / torchvision 0.26, no rclpy):
#   OUT=/some/dir bash bench/gpu_check.sh
# 1. a quick CUDA correctness check of the Segmenter (fp32 vs CPU, fp16/bf16 vs fp32, shapes, NaN);
# 2. bench/latency.py at 1024x1280 in fp16 with --skip-ros (imports no rclpy);
# 3. a short soak on CUDA (GPU memory and RSS flat over 2000 frames);
# then one final table. Everything lands under $OUT. About 3-4 minutes on an H100.
# Overrides: PYTHON, DEVICE (cuda), SIZE (1024x1280), PRECISION (fp16), FRAMES (30),
# WARMUP (5), SOAK_FRAMES (2000), COMPILE=1 (adds a torch.compile run of the main table).
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
mkdir -p "$OUT"
status=0

echo "== machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$PY" -c 'import torch, torchvision, cv2; print("torch", torch.__version__, "torchvision",
torchvision.__version__, "cv2", cv2.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"

echo "== correctness (Segmenter on $DEVICE)"
if ! timeout 240 "$PY" bench/gpu_correctness.py --device "$DEVICE" \
    --json "$OUT/gpu_correctness.json" 2>&1 | tee "$OUT/gpu_correctness.txt"; then
  echo "correctness check FAILED"; status=1
fi

echo "== latency ($SIZE, $PRECISION)"
if ! timeout 420 "$PY" bench/latency.py --device "$DEVICE" --precision "$PRECISION" \
    --size "$SIZE" --frames "$FRAMES" --warmup "$WARMUP" --skip-ros \
    --json "$OUT/gpu_latency.json" --plot "$OUT/gpu_latency.png" 2>&1 \
    | tee "$OUT/gpu_latency.txt"; then
  echo "latency run FAILED"; status=1
fi

if [[ "${COMPILE:-0}" == "1" ]]; then
  echo "== latency with torch.compile ($SIZE, $PRECISION, main table only)"
  timeout 420 "$PY" bench/latency.py --device "$DEVICE" --precision "$PRECISION" \
    --size "$SIZE" --frames "$FRAMES" --warmup "$WARMUP" --skip-ros --no-sweeps --compile \
    --json "$OUT/gpu_latency_compile.json" 2>&1 | tee "$OUT/gpu_latency_compile.txt" \
    || { echo "compiled latency run FAILED"; status=1; }
fi

echo "== soak ($SOAK_FRAMES frames on $DEVICE)"
if ! timeout 240 "$PY" bench/soak.py --device "$DEVICE" --precision "$PRECISION" \
    --frames "$SOAK_FRAMES" --settle 300 --json "$OUT/gpu_soak.json" 2>&1 \
    | grep -v '^INFO' | tee "$OUT/gpu_soak.txt"; then
  echo "soak FAILED"; status=1
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
PYEOF
exit $status
