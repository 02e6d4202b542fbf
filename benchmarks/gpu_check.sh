#!/usr/bin/env bash
# The GPU check of a lent machine (no MinkowskiEngine, no internet; its own python3 holds a CUDA PyTorch):
# tests/test_cuda.py (GPU = CPU, op by op and through the pre-training CLI), then benchmarks/gpu_pretrain.py on each
# method's full-profile config. Every step has its own time limit so that the others still report.
#   bash benchmarks/gpu_check.sh OUT_DIR      (needs runs/smoke/checkpoints/05_image_to_point_2d.pt: ./reproduce.sh --only 05)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/gpu_check}; mkdir -p "$out"
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 SSL3D_PROGRESS=0
py=${PYTHON:-python3}
{ nvidia-smi -L; $py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/device.txt"
timeout 150 $py -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$out/test_cuda.log" | tail -25
: > "$out/gpu_pretrain.md"
for m in gmm act image_to_point pointcontrast; do
  iters=20; [ $m = pointcontrast ] && iters=10
  timeout 110 $py benchmarks/gpu_pretrain.py --methods $m --iters $iters --out "$out/gpu_pretrain_$m.md" \
    --set image_to_point:method.args.teacher=runs/smoke/checkpoints/05_image_to_point_2d.pt 2>&1 \
    | grep -v Warning | tee -a "$out/gpu_pretrain.log" || echo "| $m | timed out or failed (exit $?) |" | tee -a "$out/gpu_pretrain.log"
  tail -n 1 "$out/gpu_pretrain_$m.md" >> "$out/gpu_pretrain.md" 2>/dev/null
done
