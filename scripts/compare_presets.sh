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
# default OUT/compare.png), BIN (a facegan binary to use instead of building one),
# HELD_OUT (keep the last N images out of training and measure against them instead of the
# first N), METRICS (what `facegan eval` measures, default swd; e.g. fid,kid,pr,swd for the
# family comparison of docs/architectures.md), NUM (faces generated per evaluation, 1000).
# Each run's CPU time (user + system seconds, summed over resumes) goes to OUT/PRESET/cpu_s.
# BATCH=preset keeps each preset's own batch size. SEED (1), AUGMENT (none; `ada` or
# `diffaugment`: `train --augment`), EVAL_IMAGES (also evaluate FID during training every that
# many real images, `train --eval-every`, EVAL_NUM (NUM) faces against the held-out ones: the learning
# curves and, with the training CPU time, `facegan compare --curves` and `--table`, which the
# script then writes as OUT/curves.png and OUT/table.md), CHECKPOINT_STEPS (100).
#
# Every run checkpoints each CHECKPOINT_STEPS steps and the script resumes unfinished runs, so a
# killed script loses at most that many steps per preset: run it again with the same
# arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/celeba/img_align_celeba}
out=${2:-runs/compare}
steps=${STEPS:-500}
batch=${BATCH:-32}
width=${WIDTH:-32}
presets=${PRESETS:-dcgan-64 minimax-64 lsgan-64 hinge-64 fgan-kl-64 fgan-js-64 ragan-64 ralsgan-64 rahinge-64 dragan-64 r1-64 wgan-64 wgan-gp-64}
picture=${PICTURE:-$out/compare.png}
metrics=${METRICS:-swd}
num=${NUM:-1000}
seed=${SEED:-1}
ck_steps=${CHECKPOINT_STEPS:-100}
held=()
[ -n "${HELD_OUT:-}" ] && held=(--held-out "$HELD_OUT")
augment=()
[ -n "${AUGMENT:-}" ] && augment=(--augment "$AUGMENT")

# Runs a command, adding its user + system CPU seconds to the file $1.
timed() {
    local acc=$1 t
    shift
    t=$(mktemp)
    /usr/bin/time -f '%U %S' -o "$t" "$@"
    awk -v f="$acc" 'BEGIN { s = 0; if ((getline l < f) > 0) s = l } { s += $1 + $2 } END { print s > f }' "$t"
    rm -f "$t"
}

source scripts/facegan_bin.sh
bin=$(facegan_bin)
mkdir -p "$out"

runs=()
for p in $presets; do
    run="$out/$p"
    runs+=("$run")
    shown=$("$bin" presets --show "$p")
    b=$batch
    [ "$batch" = preset ] && b=$(sed -n 's/^batch_size = //p' <<<"$shown")
    per_step=$((b * $(sed -n 's/^n_critic = //p' <<<"$shown")))
    [ -n "${IMAGES:-}" ] && steps=$((IMAGES / per_step))
    if [ "$steps" -lt 1 ] || { [ -n "${EVAL_IMAGES:-}" ] && [ "$EVAL_IMAGES" -lt "$per_step" ]; }; then
        echo "$p: a step shows D $per_step real images (batch $b x n_critic): IMAGES and EVAL_IMAGES must be at least that" >&2
        exit 1
    fi
    evals=()
    [ -n "${EVAL_IMAGES:-}" ] && evals=(--eval-every $((EVAL_IMAGES / per_step)) --eval-num "${EVAL_NUM:-$num}")
    widths=(--ngf "$width" --ndf "$width")
    [ "$width" = preset ] && widths=()
    if [ -f "$run/checkpoints/step-$(printf %07d "$steps").safetensors" ]; then
        echo "== $p: done"
        continue
    fi
    if ls "$run"/checkpoints/step-*.safetensors >/dev/null 2>&1; then
        echo "== $p: resuming"
        timed "$run/cpu_s" "$bin" train --resume "$run" --quiet
    else
        echo "== $p: training $steps steps (batch $b, ngf = ndf = $width)"
        rm -rf "$run"
        mkdir -p "$run"
        timed "$run/cpu_s" "$bin" train --data "$data" --preset "$p" --out "$run" --steps "$steps" \
            --batch-size "$b" "${widths[@]}" "${held[@]}" "${augment[@]}" "${evals[@]}" --seed "$seed" \
            --log-every 10 --sample-every "$ck_steps" --checkpoint-every "$ck_steps" --quiet
    fi
done

if [ -n "${EVAL_IMAGES:-}" ]; then
    "$bin" compare --out "$picture" --curves "$out/curves.png" --table "$out/table.md" "${runs[@]}"
else
    "$bin" compare --out "$picture" "${runs[@]}"
fi

# The metrics of each: NUM faces vs the first NUM images of the data (or the HELD_OUT last
# ones), kept as OUT/PRESET/eval.json; by default only the sliced Wasserstein distance, which
# needs no network.
reference=(--num-real "$num")
[ -n "${HELD_OUT:-}" ] && reference=(--held-out "$HELD_OUT")
for run in "${runs[@]}"; do
    [ -f "$run/eval.json" ] || "$bin" eval "$run" --real "$data" --metrics "$metrics" --num "$num" \
        "${reference[@]}" --quiet --json "$run/eval.json" >/dev/null
    printf '%-20s CPU s %8s  FID %8s  SWD mean (x1e3) %s\n' "$(basename "$run")" "$(cat "$run/cpu_s" 2>/dev/null)" \
        "$(sed -n 's/^ *"fid": \([0-9.]*\),*$/\1/p' "$run/eval.json" | head -1 | cut -c1-7)" \
        "$(sed -n 's/^ *"mean": \([0-9.]*\),*$/\1/p' "$run/eval.json" | tail -1)"
done
