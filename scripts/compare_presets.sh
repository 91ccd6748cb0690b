#!/usr/bin/env bash
# Trains every 64x64 loss preset (or the PRESETS given) with the same budget on the same
# data, then draws one picture with a sample grid from each (same latents) and prints each
# one's sliced Wasserstein distance to the data: the comparison in docs/losses.md. A tool for
# people: no build, test or CI step runs it.
#
#   scripts/compare_presets.sh [DATA] [OUT]
#
# DATA: image folder or prepared cache (default ../shared/data/celeba/img_align_celeba)
# OUT:  folder for the runs (default runs/compare); each preset trains into OUT/PRESET.
# Environment (the budget): STEPS (G steps, default 500), or IMAGES (real images shown to D:
# each preset gets IMAGES / (BATCH x its n_critic) steps, the fair budget across presets with
# different n_critic), BATCH (32), WIDTH (ngf = ndf, 32; `preset` keeps each preset's own),
# PRESETS (space separated, default all the 64x64 loss presets), PICTURE (the output PNG,
# default OUT/compare.png), BIN (a facegan binary to use instead of building one).
#
# Every run checkpoints each 100 steps and the script resumes unfinished runs, so a killed
# script loses at most 100 steps per preset: run it again with the same arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/celeba/img_align_celeba}
out=${2:-runs/compare}
steps=${STEPS:-500}
batch=${BATCH:-32}
width=${WIDTH:-32}
presets=${PRESETS:-dcgan-64 minimax-64 lsgan-64 hinge-64 fgan-kl-64 fgan-js-64 ragan-64 ralsgan-64 rahinge-64 dragan-64 r1-64 wgan-64 wgan-gp-64}
picture=${PICTURE:-$out/compare.png}

if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release --quiet
    bin=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/facegan
fi
mkdir -p "$out"

runs=()
for p in $presets; do
    run="$out/$p"
    runs+=("$run")
    if [ -n "${IMAGES:-}" ]; then
        n_critic=$("$bin" presets --show "$p" | sed -n 's/^n_critic = //p')
        steps=$((IMAGES / (batch * n_critic)))
    fi
    widths=(--ngf "$width" --ndf "$width")
    [ "$width" = preset ] && widths=()
    if [ -f "$run/checkpoints/step-$(printf %07d "$steps").safetensors" ]; then
        echo "== $p: done"
        continue
    fi
    if ls "$run"/checkpoints/step-*.safetensors >/dev/null 2>&1; then
        echo "== $p: resuming"
        "$bin" train --resume "$run" --quiet
    else
        echo "== $p: training $steps steps (batch $batch, ngf = ndf = $width)"
        rm -rf "$run"
        "$bin" train --data "$data" --preset "$p" --out "$run" --steps "$steps" --batch-size "$batch" \
            "${widths[@]}" --seed 1 --log-every 10 --sample-every 100 --checkpoint-every 100 --quiet
    fi
done

"$bin" compare --out "$picture" "${runs[@]}"

# Sliced Wasserstein distance of each (no network needed): 1,000 faces vs the first 1,000
# images of the data, kept as OUT/PRESET/swd.json.
for run in "${runs[@]}"; do
    [ -f "$run/swd.json" ] || "$bin" eval "$run" --real "$data" --metrics swd --num 1000 --num-real 1000 \
        --quiet --json "$run/swd.json" >/dev/null
    printf '%-12s SWD mean (x1e3) %s\n' "$(basename "$run")" \
        "$(sed -n 's/^ *"mean": \([0-9.]*\),*$/\1/p' "$run/swd.json" | tail -1)"
done
