#!/bin/bash
# The measurements of docs/augmentation.md: DCGAN at 32x32 (widths 32) on the first 1,000
# shared CelebA faces, 64,000 real images shown to D (64 epochs, so D can memorise them),
# seed 0, without augmentation, with DiffAugment and with ADA at ada_kimg 100, then
# all resumed to 192,000 images beside ADA with the paper's ada_kimg 500 (the default); FID of 1000 fakes
# against 2000 faces of the whole folder after each budget.
#   bash scripts/augment_runs.sh [RUNS_DIR]   (default runs/augment)
# Each step is skipped when its output exists, so the script can be re-run to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/augment}
F=./target/release/facegan
D=${FACEGAN_CELEBA_DIR:-../shared/data/celeba/img_align_celeba}
D=$(cd "$D" && pwd)
mkdir -p "$OUT/faces1k"
cargo build --release --quiet
# The subset: links to the first 1,000 images by name (nothing copied).
[ -n "$(ls -A "$OUT/faces1k")" ] || ls "$D" | grep -i '\.jpg$' | sort | awk 'NR <= 1000' | while read -r f; do
  ln -s "$D/$f" "$OUT/faces1k/$f"; done
# Budgets: 64,000 and then 192,000 images (the same runs resumed), FID after each.
for steps in 1000 3000; do
  for a in none diffaugment ada ada500; do
    [ $a = ada500 ] && [ $steps = 1000 ] && continue
    if [ -d "$OUT/$a/checkpoints" ]; then
      $F train --resume "$OUT/$a" --steps $steps --quiet
    else
      extra=""; aug=$a
      [ $a = ada ] && extra="--ada-kimg 100"
      [ $a = ada500 ] && { aug=ada; extra="--ada-kimg 500"; }
      $F train --preset dcgan-32 --ngf 32 --ndf 32 --batch-size 64 --steps $steps --seed 0 --augment $aug $extra \
        --data "$OUT/faces1k" --out "$OUT/$a" --log-every 20 --sample-every 500 --quiet
    fi
    [ -f "$OUT/$a-$steps.fid.json" ] || $F eval "$OUT/$a" --real "$D" --metrics fid --num 1000 --num-real 2000 \
      --quiet --json "$OUT/$a-$steps.fid.json"
  done
done
