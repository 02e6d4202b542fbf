#!/usr/bin/env bash
# every variant of finetune_variants.py x seeds 0..N-1, one single-threaded process per (variant, seed), 16 at once
# (the 16 cores of a lent GPU machine; its CPUs, not its GPU). Usage: N=30 bash results/experiments/many_seeds.sh OUT
out=${1:?output folder}; mkdir -p "$out"
export PYTHONPATH=$PWD/lib OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SSL3D_PROGRESS=0 PYTHONUNBUFFERED=1 PY=${PY:-python3}
for s in $(seq 0 $((${N:-30} - 1))); do for v in ${VARIANTS:-ft ftpbn lpftpbn lpftpbn03}; do echo "$v $s"; done; done \
  | xargs -P 16 -L 1 bash -c '$PY results/experiments/finetune_variants.py "$0" "$1" 2>/dev/null' | tee "$out/many.log"
