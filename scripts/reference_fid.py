#!/usr/bin/env python3
"""Reference FID with PyTorch features and scipy.linalg.sqrtm, to check facegan's.

Both folders go through the same preprocessing as facegan's evaluation: images
(sorted by path, recursively: jpg/jpeg/png) are read as RGB; a square image of any
side is used as it is (give folders already prepared at the training size, e.g.
64x64 PNGs, to compare exactly the same pixels); otherwise, with --size S, the
largest centred square is cut and resized to S with PIL's Lanczos filter (close to,
but not bit-identical with, facegan's Rust resize). Then the TensorFlow-1 style
bilinear resize to 299x299 and x/128 - 1 (scripts/reference_features.py), and the
TorchScript network default_1.pt.

Usage:
  python scripts/reference_fid.py DIR_A DIR_B [DIR_C ...] [--num N] [--batch-size 50] [--threads 2]
  python scripts/reference_fid.py --bench 100 [--batch-size 50] [--threads 2]
Prints, for each folder after the first, FID against the first:
|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)) (real part) and the
Inception throughput, with KID (stylegan2-ada's estimator, numpy's random subsets)
and precision/recall (k=3) on the same features. --save-features FILE.npz keeps the
features; --from-features FILE.npz recomputes the metrics from them.
"""
import argparse
import os
import sys
import time

import numpy as np
import scipy.linalg
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_features import default_weights, load_net, to_network_input  # noqa: E402

EXTS = (".jpg", ".jpeg", ".png")


def list_images(d):
    out = []
    for root, _, files in os.walk(d, followlinks=True):
        for f in files:
            if f.lower().endswith(EXTS):
                out.append(os.path.join(root, f))
    return sorted(out)


def load(path, size):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if w != h:
        s = min(w, h)
        x0, y0 = (w - s) // 2, (h - s) // 2
        im = im.crop((x0, y0, x0 + s, y0 + s))
    if size and im.size[0] != size:
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, np.uint8)


def features(net, files, size, batch_size):
    feats = []
    t = time.time()
    for i in range(0, len(files), batch_size):
        ims = np.stack([load(f, size) for f in files[i:i + batch_size]])
        with torch.inference_mode():
            feats.append(net(to_network_input(ims)).double().numpy())
    dt = time.time() - t
    return np.concatenate(feats), len(files) / dt


def fid(fa, fb):
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    s_a, s_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean, _ = scipy.linalg.sqrtm(s_a.dot(s_b), disp=False)
    return float(np.real(np.square(mu_a - mu_b).sum() + np.trace(s_a + s_b - 2 * covmean)))


def kid(fr, ff, subsets=100, subset_size=1000, seed=0):
    """stylegan2-ada's KID (mean and std over subsets; numpy's own random subsets)."""
    n = fr.shape[1]
    m = min(min(len(fr), len(ff)), subset_size)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = ff[rng.choice(len(ff), m, replace=False)]
        y = fr[rng.choice(len(fr), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
        vals.append(t / m)
    return float(np.mean(vals)), float(np.std(vals))


def precision_recall(fr, ff, k=3):
    """Kynkaanniemi et al. 2019: k-NN balls (self excluded), exact distances."""
    def sqdist(a, b):
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)
    def radii(x):
        d = sqdist(x, x)
        np.fill_diagonal(d, 0)
        return np.partition(d, k, axis=1)[:, k]
    rr, rf = radii(fr), radii(ff)
    d = sqdist(fr, ff)  # (real, fake)
    precision = float((d <= rr[:, None]).any(0).mean())
    recall = float((d <= rf[None, :]).any(1).mean())
    return precision, recall


def report(names, feats):
    for d, f in zip(names[1:], feats[1:]):
        p, r = precision_recall(feats[0], f)
        km, ks = kid(feats[0], f)
        print(f"{names[0]} vs {d}: FID {fid(feats[0], f):.6f}  KID {km:.6f} +- {ks:.6f}  "
              f"precision {p:.4f} recall {r:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--weights", default=default_weights())
    ap.add_argument("--num", type=int, default=None, help="first N images of each folder")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", type=int, default=0, help="time N synthetic 64x64 images")
    ap.add_argument("--save-features", default=None)
    ap.add_argument("--from-features", default=None,
                    help="metrics of a --save-features file, no network")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_features:
        z = np.load(args.from_features)
        keys = sorted(z.files, key=lambda k: int(k[1:]))
        report(args.dirs or keys, [z[k] for k in keys])
        return
    net = load_net(args.weights)
    if args.bench:
        rng = np.random.default_rng(0)
        ims = rng.integers(0, 256, (args.bench, 64, 64, 3), dtype=np.uint8)
        with torch.inference_mode():
            net(to_network_input(ims[: min(args.batch_size, args.bench)]))  # warm-up
            t = time.time()
            for i in range(0, args.bench, args.batch_size):
                net(to_network_input(ims[i:i + args.batch_size]))
            dt = time.time() - t
        print(f"{args.bench} images, batch {args.batch_size}, {args.threads} threads: "
              f"{dt:.2f} s, {args.bench / dt:.2f} images/s (torch {torch.__version__})")
        return
    if len(args.dirs) < 2:
        ap.error("give two or more folders (or --bench N)")
    feats = []
    for d in args.dirs:
        files = list_images(d)[: args.num]
        f, ips = features(net, files, args.size, args.batch_size)
        print(f"{d}: {len(files)} images, {ips:.2f} images/s", flush=True)
        feats.append(f)
    if args.save_features:
        np.savez(args.save_features, **{f"f{i}": f for i, f in enumerate(feats)})
    report(args.dirs, feats)


if __name__ == "__main__":
    main()
