#!/usr/bin/env bash
# Runs `facegan bench` (release build) and scripts/bench_torch.py with the same settings, then
# prints their times side by side with the ratio facegan / PyTorch (below 1: facegan is faster).
# A tool for people: no build, test or CI step runs it.
#
#   scripts/bench_compare.sh [--batch-size N] [--iters N] [--warmup N] [--only LIST]
#
# Those flags go to both programs unchanged. Environment:
#   THREADS  threads of both (RAYON_NUM_THREADS for facegan, --threads for PyTorch); default 2
#   PYTHON   a Python with torch; default /work/venv-torch/bin/python
#   OUT      folder for facegan.json and pytorch.json; default a new temporary folder
# For steady numbers run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
python=${PYTHON:-/work/venv-torch/bin/python}
out=${OUT:-$(mktemp -d -t facegan-bench.XXXXXX)}
mkdir -p "$out"

cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

echo "== facegan (RAYON_NUM_THREADS=$threads)"
RAYON_NUM_THREADS=$threads "$target_dir/release/facegan" bench "$@" --json "$out/facegan.json"
echo
echo "== PyTorch (--threads $threads)"
"$python" scripts/bench_torch.py --threads "$threads" "$@" --json "$out/pytorch.json"
echo

"$python" - "$out/facegan.json" "$out/pytorch.json" <<'EOF'
import json, sys

fg, pt = (json.load(open(p)) for p in sys.argv[1:3])
ours = {e["name"]: e for e in fg["entries"]}
theirs = {e["name"]: e for e in pt["entries"]}
print(
    f"facegan vs PyTorch {pt.get('torch_version', '?')}: dcgan-64 on the cpu, batch {fg['batch_size']}, "
    f"{fg['threads']} / {pt['threads']} threads, median of {fg['iters']} calls"
)
print("ratio = facegan / PyTorch wall time (below 1: facegan is faster); candle_* rows: candle's own op vs PyTorch's")
print(f"{'measurement':<32} {'facegan ms':>11} {'pytorch ms':>11} {'ratio':>7} {'facegan img/s':>14} {'pytorch img/s':>14}")
fmt = lambda v: "-" if v is None else f"{v:.1f}"
for name, e in ours.items():
    t = theirs.get(name[len("candle_"):] if name.startswith("candle_") else name)
    if t is None:
        print(f"{name:<32} {e['ms']:>11.1f} {'-':>11} {'-':>7} {fmt(e['images_per_s']):>14} {'-':>14}")
        continue
    print(
        f"{name:<32} {e['ms']:>11.1f} {t['ms']:>11.1f} {e['ms'] / t['ms']:>6.2f}x "
        f"{fmt(e['images_per_s']):>14} {fmt(t['images_per_s']):>14}"
    )
a, b = fg.get("peak_rss_mib"), pt.get("peak_rss_mib")
if a and b:
    print(f"{'peak RSS MiB (after ' + fg['peak_rss_after'] + ')':<32} {a:>11.0f} {b:>11.0f} {a / b:>6.2f}x")
print(f"JSON: {sys.argv[1]} {sys.argv[2]}")
EOF
