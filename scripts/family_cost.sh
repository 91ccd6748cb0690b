#!/usr/bin/env bash
# What one real image shown to D costs each preset's training on this machine, measured in one
# run: CPU seconds (user + system, all threads) and wall seconds per image of `facegan train`
# with the preset's own batch, n_critic, losses and penalties. Long comparisons span sessions
# and machines (docs/architectures.md), so their counted CPU-hours come from different CPUs;
# this table, taken on one machine for every family at once, is what ranks them by cost. A
# tool for people: no build, test or CI step runs it.
#
#   scripts/family_cost.sh [DATA] [OUT]
#
# DATA: image folder or prepared cache (default ../shared/data/celeba/img_align_celeba)
# OUT:  scratch folder for the short runs (default runs/cost); the table goes to OUT/cost.md
# Environment: PRESETS (space separated; default the eight 64x64 families), BIN (a facegan
# binary instead of building one), AUGMENT (ada; `none` for plain steps), MIN_STEPS (8),
# SHARED=1 to measure although other facegan processes are running.
#
# Each preset trains 2 warm-up steps, then a window of G steps that is a whole number of
# every penalty's interval (stylegan2-64: 16 steps, so that R1 every 16 and path length every
# 4 are counted in proportion) and at least MIN_STEPS; the cost is the difference of the
# trainer's own CPU and wall clocks (stats.jsonl, one line per step) across the window, so
# start-up, data preparation and the last checkpoint are left out. ADA's p stays near 0 in
# so short a run: a long run whose p rises pays a little more for its augmentations.
#
# Measure with the machine to yourself: on the 2-core Zen 4 a table taken while another
# training run shared the cores counted about twice the CPU seconds per image of one taken
# alone (docs/architectures.md), so the script refuses while another facegan runs.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/celeba/img_align_celeba}
out=${2:-runs/cost}
presets=${PRESETS:-mlp-64 dcgan-64 ebgan-64 sngan-64 selfmod-64 resnet-wgan-gp-64 sagan-64 stylegan2-64}
augment=${AUGMENT:-ada}
min_steps=${MIN_STEPS:-8}
running=()
for pid in $(pgrep facegan || true); do # paused ones (state T) do not compete
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = T ] || running+=("$pid")
done
if [ -z "${SHARED:-}" ] && [ ${#running[@]} -gt 0 ]; then
    echo "other facegan processes are running; their share of the cores inflates CPU seconds per image:" >&2
    ps -o pid=,args= -p "${running[@]}" >&2
    echo "stop or pause them (kill -STOP), or set SHARED=1 to measure anyway" >&2
    exit 1
fi
warm=2

source scripts/facegan_bin.sh
bin=$(facegan_bin)
mkdir -p "$out"
gcd() { local a=$1 b=$2; while [ "$b" -ne 0 ]; do set -- "$b" $((a % b)); a=$1 b=$2; done; echo "$a"; }

table="$out/cost.md"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
    echo "CPU: ${cpu:-unknown}, $(nproc) cores; $bin ($("$bin" --version), checkout at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)); augment $augment; $(date -u +%F)"
    echo
    echo "| preset | images per step | G steps timed | CPU-s per image | images per CPU-s | wall img/s |"
    echo "|---|---|---|---|---|---|"
} >"$table"
for p in $presets; do
    shown=$("$bin" presets --show "$p")
    b=$(sed -n 's/^batch_size = //p' <<<"$shown")
    nc=$(sed -n 's/^n_critic = //p' <<<"$shown")
    window=1
    for e in $(sed -n 's/^every = //p' <<<"$shown"); do
        [ "$e" -gt 0 ] && window=$((window * e / $(gcd "$window" "$e")))
    done
    w=$window
    while [ "$w" -lt "$min_steps" ]; do w=$((w + window)); done
    run="$out/$p"
    rm -rf "$run"
    aug=()
    [ "$augment" != none ] && aug=(--augment "$augment")
    "$bin" train --preset "$p" --data "$data" --out "$run" --steps $((warm + w)) "${aug[@]}" \
        --log-every 1 --sample-every 1000000 --checkpoint-every 1000000 --checkpoint-minutes 1000000 --quiet
    # stats.jsonl: one line per step; the window is from the end of step `warm` to the last.
    awk -v p="$p" -v warm="$warm" -v per=$((b * nc)) -v bs="$b" -v nc="$nc" '
        function num(k,   m) { if (match($0, "\"" k "\":[0-9.eE+-]+")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m + 0 } return -1 }
        { s = num("step"); if (s == warm) { c0 = num("cpu_s"); t0 = num("elapsed_s") } if (s > warm) { c1 = num("cpu_s"); t1 = num("elapsed_s"); n = s - warm } }
        END {
            if (n < 1 || c0 < 0 || c1 < 0) { print p ": no timed steps in stats.jsonl" > "/dev/stderr"; exit 1 }
            img = n * per
            printf "| `%s` | %d x %d | %d | %.4f | %.1f | %.1f |\n", p, bs, nc, n, (c1 - c0) / img, img / (c1 - c0), img / (t1 - t0)
        }' "$run/stats.jsonl" >>"$table"
    tail -1 "$table"
done
echo "wrote $table"
