#!/bin/bash
# The measurements of docs/augmentation.md: DCGAN at 32x32 (widths 32) on the first 1,000
# shared CelebA faces, 64,000 real images shown to D (64 epochs, so D can memorise them),
# seed 0, without augmentation, with DiffAugment and with ADA; FID of 1000 fakes against
# 2000 faces of the whole folder.
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
for a in none diffaugment ada; do
  if [ -d "$OUT/$a/checkpoints" ]; then
    $F train --resume "$OUT/$a" --quiet
  else
    $F train --preset dcgan-32 --ngf 32 --ndf 32 --batch-size 64 --steps 1000 --seed 0 --augment $a \
      --data "$OUT/faces1k" --out "$OUT/$a" --log-every 20 --sample-every 500 --quiet
  fi
  [ -f "$OUT/$a.fid.json" ] || $F eval "$OUT/$a" --real "$D" --metrics fid --num 1000 --num-real 2000 \
    --quiet --json "$OUT/$a.fid.json"
done
