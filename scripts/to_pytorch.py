#!/usr/bin/env python3
"""Take a facegan generator to PyTorch: load its safetensors file (an export, f16 or f32, or
a full checkpoint's EMA generator) into an equivalent torch module and make the same faces
`facegan generate --seed S --count N` makes.

    python scripts/to_pytorch.py MODEL.safetensors [--seed 0] [--count 16] [--out faces/]

Writes face-0000.png ... (one PNG per face, like `facegan generate --out DIR/`) and prints
the module. Needs torch, numpy and pillow; nothing of facegan. As a library:

    g, config = load_generator("models/dcgan64-celeba.safetensors")   # a torch.nn.Module
    z = latents(seed=0, count=16, nz=config["model"]["nz"])            # facegan's latents
    images = g(z)                                                      # (N, 3, 64, 64) in [-1, 1]

Families: dcgan (the shipped model) and mlp. Batch norm uses the stored running statistics,
as `facegan generate` does (evaluation mode).
"""

import argparse
import json
import math
import struct
import sys

MASK = (1 << 64) - 1
GENERATE_TAG = 0x6E4E  # src/sample/generate.rs


class Rng:
    """facegan's RNG (src/rng.rs): xoshiro256++ seeded by splitmix64, Box-Muller normals."""

    def __init__(self, seed):
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.s.append(z ^ (z >> 31))

    @classmethod
    def derived(cls, seed, tag):
        return cls(seed ^ ((tag * 0xD1B54A32D192ED03) & MASK))

    def next_u64(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & MASK
        result = (rotl((s[0] + s[3]) & MASK, 23) + s[0]) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def latents(seed, count, nz, tag=GENERATE_TAG):
    import torch

    rng = Rng.derived(seed, tag)
    return torch.tensor([rng.normal() for _ in range(count * nz)], dtype=torch.float32).view(count, nz)


def read_safetensors(path):
    """The tensors (as float32 torch tensors) and the metadata of a safetensors file."""
    import numpy as np
    import torch

    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + a : 8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(arr.astype(np.float32))
    return tensors, meta


def parse_toml(text):
    import tomllib

    return tomllib.loads(text)


def build(torch, model):
    nn = torch.nn
    arch, size, nz, ngf = model["arch"], model["image_size"], model["nz"], model["ngf"]
    if arch == "dcgan":
        # src/models/dcgan.rs: transposed convs main.0 .. main.n, batch norm main.i.bn, ReLU, tanh.
        n = (size // 4).bit_length() - 1
        width = lambda i: ngf << (n - 1 - i)

        class Dcgan(nn.Module):
            def __init__(self):
                super().__init__()
                self.main = nn.ModuleDict()
                for i in range(n + 1):
                    cin = nz if i == 0 else width(i - 1)
                    cout = 3 if i == n else width(i)
                    stride, pad = (1, 0) if i == 0 else (2, 1)
                    block = nn.Module()
                    block.conv = nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False)
                    if i < n:
                        block.bn = nn.BatchNorm2d(cout)
                    self.main[str(i)] = block

            def forward(self, z):
                x = z.view(z.shape[0], nz, 1, 1)
                for i in range(n + 1):
                    b = self.main[str(i)]
                    x = b.conv(x)
                    x = torch.relu(b.bn(x)) if i < n else torch.tanh(x)
                return x

        def rename(key):  # main.0.weight -> main.0.conv.weight; main.0.bn.* stays
            parts = key.split(".")
            return key if parts[2] == "bn" else f"main.{parts[1]}.conv.{parts[2]}"

        return Dcgan(), rename
    if arch == "mlp":
        # src/models/mlp.rs: fc.0 .. fc.4, batch norm fc.i.bn on 1 .. 3, LeakyReLU(0.2), tanh.
        widths = [nz, 2 * ngf, 4 * ngf, 8 * ngf, 16 * ngf, 3 * size * size]

        class Mlp(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.ModuleDict()
                for i in range(5):
                    block = nn.Module()
                    block.lin = nn.Linear(widths[i], widths[i + 1])
                    if 1 <= i <= 3:
                        block.bn = nn.BatchNorm1d(widths[i + 1])
                    self.fc[str(i)] = block

            def forward(self, z):
                h = z
                for i in range(4):
                    b = self.fc[str(i)]
                    h = b.lin(h)
                    h = torch.nn.functional.leaky_relu(b.bn(h) if i >= 1 else h, 0.2)
                return torch.tanh(self.fc["4"].lin(h)).view(-1, 3, size, size)

        def rename(key):
            parts = key.split(".")
            return key if parts[2] == "bn" else f"fc.{parts[1]}.lin.{parts[2]}"

        return Mlp(), rename
    sys.exit(f"family {arch}: this script knows dcgan and mlp")


def load_generator(path):
    """A facegan file's EMA generator as a torch module in eval mode, and its configuration."""
    import torch

    tensors, meta = read_safetensors(path)
    config = parse_toml(meta["config"])
    g, rename = build(torch, config["model"])
    state = {}
    for key, t in tensors.items():
        for prefix in ("G_ema.params.", "G_ema.buffers."):
            if key.startswith(prefix):
                state[rename(key[len(prefix) :])] = t
    missing, unexpected = g.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"{path}: tensors do not fit the module: missing {missing}, unexpected {unexpected}")
    return g.eval(), config


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--out", default="faces")
    a = p.parse_args(argv)
    import os
    import numpy as np
    import torch
    from PIL import Image

    g, config = load_generator(a.model)
    with torch.no_grad():
        x = g(latents(a.seed, a.count, config["model"]["nz"]))
    px = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    os.makedirs(a.out, exist_ok=True)
    for i, face in enumerate(px):
        Image.fromarray(np.ascontiguousarray(face)).save(os.path.join(a.out, f"face-{i:04d}.png"))
    print(g)
    print(f"wrote {len(px)} faces to {a.out}/", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
