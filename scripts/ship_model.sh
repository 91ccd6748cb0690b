#!/bin/bash
# Ship a checkpoint as a zoo model, the steps of docs/shipped-model.md in one go:
#   1. refuse when models/NAME.cont.safetensors was already committed today (one
#      continuation file per model, replaced at most once a day);
#   2. export the EMA generator (f16) and the continuation file (must stay <= 25 MB);
#   3. measure the export: fid1k (1,000 generated vs the last 1,000 held-out faces) and
#      fid5k (5,000 vs all 5,000 held-out faces, issue 15's protocol), with KID and
#      precision/recall, reports in $REPORTS (default /tmp/ship-NAME);
#   4. redraw the README grid (GRID) and the learning curve (CURVE) from the new files
#      (GRID and CURVE are paths from the repository root);
#   5. set images_seen, fid and kid (fid1k's) of NAME's entry in models/zoo.toml.
# What it does not do: cpu_hours, README and docs/shipped-model.md prose, the commit.
#   bash scripts/ship_model.sh NAME CHECKPOINT GRID CURVE
#   e.g. bash scripts/ship_model.sh dcgan64-ada-celeba runs/main/checkpoints/step-0020000.safetensors \
#          docs/images/shipped-dcgan64-ada.png docs/images/shipped-dcgan64-ada-curve.png
# FID5K=0 skips the 5,000-face evaluation (10-20 min on 2 cores).
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,16p' "$0"; exit 2; }
NAME=$1 CK=$2 GRID=$3 CURVE=$4
CK=$(cd "$(dirname "$CK")" && pwd)/$(basename "$CK")
cd "$(dirname "$0")/.."
. scripts/facegan_bin.sh
F=$(facegan_bin)
D=${FACEGAN_CELEBA_DIR:-../shared/data/celeba/img_align_celeba}
R=${REPORTS:-/tmp/ship-$NAME}
GEN=models/$NAME.safetensors CONT=models/$NAME.cont.safetensors
[ -f "$CK" ] || { echo "no checkpoint $CK" >&2; exit 1; }
grep -q "^name = \"$NAME\"$" models/zoo.toml || { echo "no model $NAME in models/zoo.toml" >&2; exit 1; }
last=$(git log -1 --format=%cd --date=format:%F -- "$CONT" 2>/dev/null || true)
if [ "$last" = "$(date +%F)" ]; then
  echo "$CONT was committed today ($last): the next export is allowed tomorrow" >&2
  exit 1
fi
mkdir -p "$R"
# Both files are written beside the reports first, so that a failure leaves models/ as it was.
"$F" export --checkpoint "$CK" --out "$R/gen.safetensors" --half
"$F" export --checkpoint "$CK" --out "$R/cont.safetensors" --continuation
size=$(stat -c %s "$R/cont.safetensors")
[ "$size" -le 25000000 ] || { echo "the continuation file is $size bytes, over 25 MB; models/ unchanged" >&2; exit 1; }
mv "$R/gen.safetensors" "$GEN"
mv "$R/cont.safetensors" "$CONT"
"$F" eval --model "$NAME" --real "$D" --held-out 1000 --num 1000 --metrics fid,kid,pr --quiet --json "$R/fid1k.json" | tee "$R/fid1k.txt"
if [ "${FID5K:-1}" != 0 ]; then
  "$F" eval --model "$NAME" --real "$D" --held-out 5000 --num 5000 --metrics fid,kid,pr --quiet --json "$R/fid5k.json" | tee "$R/fid5k.txt"
fi
"$F" generate --model "$NAME" --out "$GRID"
"$F" compare "$CONT" --labels "$NAME" --out "$R/faces.png" --count 16 --curves "$CURVE" --table "$R/curve.md"
# The zoo entry: the values of the export just measured.
# (safetensors metadata: the JSON header at the file's start)
seen=$(head -c 100000 "$CONT" | grep -ao '"images_seen":"[0-9]*"' | head -1 | grep -o '[0-9]*')
[ -n "$seen" ] || { echo "no images_seen in $CONT" >&2; exit 1; }
fid=$(grep -o '"fid": *[-0-9.eE+]*' "$R/fid1k.json" | head -1 | grep -o '[-0-9.eE+]*$')
kid=$(grep -A3 '"kid"' "$R/fid1k.json" | grep -o '"mean": *[-0-9.eE+]*' | head -1 | grep -o '[-0-9.eE+]*$')
awk -v name="$NAME" -v seen="$seen" -v fid="$(printf %.1f "$fid")" -v kid="$(printf %.3f "$kid")" '
  /^\[\[model\]\]/ { inside = 0 }
  $0 == "name = \"" name "\"" { inside = 1 }
  inside && /^images_seen = / { $0 = "images_seen = " seen }
  inside && /^fid = / { $0 = "fid = " fid }
  inside && /^kid = / { $0 = "kid = " kid }
  { print }' models/zoo.toml > models/zoo.toml.new && mv models/zoo.toml.new models/zoo.toml
echo "shipped $NAME from $CK: $seen images seen, fid1k $fid, KID $kid; reports in $R"
git diff --stat -- models docs/images
