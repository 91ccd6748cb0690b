#!/usr/bin/env bash
# Interleaved A/B timing of several facegan binaries (and optionally PyTorch) on this
# machine, whose speed drifts by tens of percent from minute to minute: each round runs every
# program once, and the medians (and minima: the least disturbed run) over rounds are
# compared. A tool for people; no build, test or
# CI step runs it.
#
#   scripts/bench_ab.sh ROUNDS MEASUREMENTS PROGRAM...
#
# MEASUREMENTS is `facegan bench --only`'s list (e.g. train_step,wgan). A PROGRAM is a path to
# a facegan binary (copy each build somewhere first), or `pytorch` for scripts/bench_torch.py
# (PYTHON, default /work/venv-torch/bin/python). Every run uses batch 64, 2 threads, ITERS timed
# iterations (default 2; each run reports the upper median) after WARMUP untimed ones
# (default 1). Pause other jobs on the machine first (kill -STOP).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 only=$2
shift 2
python=${PYTHON:-/work/venv-torch/bin/python}
iters=${ITERS:-2} warmup=${WARMUP:-1}
for _ in $(seq "$rounds"); do
  for prog in "$@"; do
    if [ "$prog" = pytorch ]; then
      "$python" scripts/bench_torch.py --threads 2 --only "$only" --batch-size 64 --iters "$iters" --warmup "$warmup" 2>/dev/null
    else
      RAYON_NUM_THREADS=2 "$prog" bench --only "$only" --batch-size 64 --iters "$iters" --warmup "$warmup" 2>/dev/null
    fi | awk -v p="$prog" '$2 ~ /^[0-9.]+$/ && NF >= 4 {print p, $1, $2}'
  done
done | "$python" -c '
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in sys.stdin:
    prog, name, ms = line.split()
    runs[(name, prog)].append(float(ms))
for (name, prog), ms in sorted(runs.items()):
    print(f"{name:22s} {prog:30s} median {statistics.median(ms):8.1f} ms  min {min(ms):8.1f} ms  runs {[round(m) for m in ms]}")
'
