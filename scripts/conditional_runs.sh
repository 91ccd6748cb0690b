#!/bin/bash
# The measurements of docs/conditional.md, at 32x32 on the shared CelebA faces.
#   bash scripts/conditional_runs.sh [RUNS_DIR]   (default runs/conditional)
# 1. The 32x32 attribute classifier (all 40 attributes, 2000 faces held out).
# 2. cgan-64, acgan-64, cbn-projection-64 and infogan-64 at --image-size 32, batch 64, seed 0,
#    64,000 real images shown to D each (cbn-projection has 5 D steps a step: 200 steps).
# 3. Their FID (1000 fakes against 2000 reals) and attribute accuracy (500 faces per value).
# 4. SGAN (sgan-64 at 32x32, 32,000 images, 2000 faces held out) with 1%, 10% and 100% of the
#    labels, and the same D trained as a plain classifier on the same labels.
# 5. SGAN with feature matching at 1% and 10%.
# Each step is skipped when its output exists, so the script can be re-run to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/conditional}
F=./target/release/facegan
D=${FACEGAN_CELEBA_DIR:-../shared/data/celeba/img_align_celeba}
mkdir -p "$OUT"
cargo build --release --quiet
[ -f "$OUT/clf32.safetensors" ] || $F classifier train --data "$D" --size 32 --steps 1500 \
  --out "$OUT/clf32.safetensors" --json "$OUT/clf32.json" --quiet
for p in cgan-64 acgan-64 cbn-projection-64 infogan-64; do
  steps=1000; [ $p = cbn-projection-64 ] && steps=200
  if [ -d "$OUT/$p/checkpoints" ]; then
    $F train --resume "$OUT/$p" --quiet
  else
    $F train --preset $p --image-size 32 --batch-size 64 --steps $steps --seed 0 --data "$D" \
      --out "$OUT/$p" --log-every 50 --sample-every 500 --quiet
  fi
  [ -f "$OUT/$p.fid.json" ] || $F eval "$OUT/$p" --real "$D" --metrics fid --num 1000 --num-real 2000 \
    --quiet --json "$OUT/$p.fid.json"
  [ $p = infogan-64 ] || $F eval "$OUT/$p" --metrics attr --classifier "$OUT/clf32.safetensors" \
    --attr-num 500 --json "$OUT/$p.attr.json"
done
for f in 0.01 0.1 1; do
  [ -d "$OUT/sgan-$f/checkpoints" ] || $F train --preset sgan-64 --image-size 32 --batch-size 64 --steps 500 \
    --seed 0 --data "$D" --held-out 2000 --labelled-fraction $f --out "$OUT/sgan-$f" --log-every 50 --quiet
  $F classifier eval --model "$OUT/sgan-$f" --data "$D" --held-out 2000 --json "$OUT/sgan-$f.json"
  [ -f "$OUT/twin-$f.json" ] || $F classifier train --categorical --attrs Male,Smiling,Young \
    --labelled-fraction $f --size 32 --width 64 --steps 500 --batch-size 64 --held-out 2000 --data "$D" \
    --out "$OUT/twin-$f.safetensors" --json "$OUT/twin-$f.json" --quiet
done
# 5. SGAN with feature matching for G (Salimans et al.), at 1% and 10% of the labels.
for f in 0.01 0.1; do
  [ -d "$OUT/sganfm-$f/checkpoints" ] || $F train --preset sgan-64 --image-size 32 --batch-size 64 --steps 500 \
    --seed 0 --data "$D" --held-out 2000 --labelled-fraction $f --feature-matching true --out "$OUT/sganfm-$f" \
    --log-every 50 --quiet
  $F classifier eval --model "$OUT/sganfm-$f" --data "$D" --held-out 2000 --json "$OUT/sganfm-$f.json"
done
