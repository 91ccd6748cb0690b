#!/usr/bin/env python3
"""PyTorch twin of `facegan bench`: the same CPU measurements, shapes and networks, under the
same names, printed as the same table and optionally written as the same JSON.

    /work/venv-torch/bin/python scripts/bench_torch.py [--batch-size 64] [--iters 5]
        [--warmup 1] [--threads 2] [--only LIST] [--json PATH]

Only a reference for comparisons (see scripts/bench_compare.sh): nothing in the build, the
tests or CI runs it, and it needs nothing but torch.

Measurements (see src/bench.rs; N = --batch-size):
  matmul_2048          2048x2048 @ 2048x2048
  g_fwd_eval           G(z) in eval mode under torch.no_grad()
  g_fwd_train          G(z) in train mode, graph kept (no backward)
  d_fwd_bwd            D(x).mean().backward() in train mode
  train_step           one DCGAN step as facegan's Session::train_step: G(z); D on the real
                       batch and the detached fakes, non-saturating loss, Adam; D's weights
                       frozen, G loss on the same fakes, Adam; EMA of G
  wgan_gp_critic_step  layer-norm critic: G(z) under no_grad, WGAN loss + 10 x gradient penalty
                       (create_graph=True), backward, Adam (betas 0.5, 0.9)
  sngan64_train_step   the sngan-64 preset's step as facegan's Session::train_step: 5 D steps
                       (G(z) with a graph, hinge loss on a real batch and the detached fakes,
                       Adam (0, 0.9)), then G's step with new fakes through D with frozen
                       weights, then the EMA; images/s counts the 5 N real images
  sagan64_train_step   the same for sagan-64: one D step, the fakes reused for G, TTUR
  stylegan2_64_step_{plain,r1,pl}
                       the stylegan2-64 preset's step (build_stylegan2, the same networks as
                       facegan's) without its lazy regularisers, with R1 on D, and with path
                       length on G (each every step): the amortised step is
                       plain + (r1 - plain)/16 + (pl - plain)/4
  conv2d_fwd[_bwd]     F.conv2d, x (N,128,32,32), w (256,128,4,4), stride 2, padding 1
  conv_transpose2d_fwd[_bwd]  F.conv_transpose2d, x (N,256,16,16), w (256,128,4,4), stride 2,
                       padding 1 (_bwd: gradients wrt x and w from a gradient of ones)
  layer_XN_fwd_bwd     each of dcgan-64's ten convolutions (g1-g5: G's transposed ones,
                       d1-d5: D's), forward and gradients wrt input and weight
  layer_rN_fwd_bwd     the same for the ResNet families' 3x3 stride-1 convolutions, one per
                       side N (r64a and r64b: both 64x64 shapes)
  attention_fwd_bwd    sagan-64's self-attention block in G (64 channels at 32x32, gamma 0.5,
                       no spectral norm), forward and gradients wrt input and weights

Networks: pytorch/examples' DCGAN G and D (nz=100, ngf=ndf=64, no biases, N(0, 0.02) weights,
batch-norm scale N(1, 0.02)), D without its final Sigmoid (the losses take logits, as in
facegan); the WGAN-GP critic is that D with a layer norm over (C, H, W) with a per-channel
scale and shift in place of batch norm (facegan's d_norm = "layer").

The peak resident set (ru_maxrss) is read right after train_step, as facegan does; it
includes the memory of the Python interpreter and of torch itself.
"""

import argparse
import json
import math
import resource
import statistics
import sys
import time

# The names of src/bench.rs (BENCH_NAMES), in the order they are taken; PyTorch has no
# counterpart of the candle_* ones, which --only accepts and skips.
BENCH_NAMES = [
    "matmul_2048",
    "g_fwd_eval",
    "g_fwd_train",
    "d_fwd_bwd",
    "train_step",
    "sngan64_train_step",
    "sagan64_train_step",
    "stylegan2_64_step_plain",
    "stylegan2_64_step_r1",
    "stylegan2_64_step_pl",
    "wgan_gp_critic_step",
    "conv2d_fwd",
    "conv2d_fwd_bwd",
    "candle_conv2d_fwd",
    "candle_conv2d_fwd_bwd",
    "conv_transpose2d_fwd",
    "conv_transpose2d_fwd_bwd",
    "candle_conv_transpose2d_fwd",
    "candle_conv_transpose2d_fwd_bwd",
    "layer_g1_fwd_bwd",
    "layer_g2_fwd_bwd",
    "layer_g3_fwd_bwd",
    "layer_g4_fwd_bwd",
    "layer_g5_fwd_bwd",
    "layer_d1_fwd_bwd",
    "layer_d2_fwd_bwd",
    "layer_d3_fwd_bwd",
    "layer_d4_fwd_bwd",
    "layer_d5_fwd_bwd",
    "layer_r64a_fwd_bwd",
    "layer_r64b_fwd_bwd",
    "layer_r32_fwd_bwd",
    "layer_r16_fwd_bwd",
    "layer_r8_fwd_bwd",
    "layer_r4_fwd_bwd",
    "attention_fwd_bwd",
    "inception",
]

# dcgan-64's convolutions as in src/bench.rs (DCGAN64_LAYERS): name, transposed, input
# channels, output channels, input side, stride, padding; kernel 4.
DCGAN64_LAYERS = [
    ("layer_g1", True, 100, 512, 1, 1, 0),
    ("layer_g2", True, 512, 256, 4, 2, 1),
    ("layer_g3", True, 256, 128, 8, 2, 1),
    ("layer_g4", True, 128, 64, 16, 2, 1),
    ("layer_g5", True, 64, 3, 32, 2, 1),
    ("layer_d1", False, 3, 64, 64, 2, 1),
    ("layer_d2", False, 64, 128, 32, 2, 1),
    ("layer_d3", False, 128, 256, 16, 2, 1),
    ("layer_d4", False, 256, 512, 8, 2, 1),
    ("layer_d5", False, 512, 1, 4, 1, 0),
]

# The ResNet families' 3x3 convolutions as in src/bench.rs (RESNET64_LAYERS): name, input
# channels, output channels, side; stride 1, padding 1.
RESNET64_LAYERS = [
    ("layer_r64a", 64, 32, 64),
    ("layer_r64b", 32, 32, 64),
    ("layer_r32", 64, 64, 32),
    ("layer_r16", 128, 128, 16),
    ("layer_r8", 256, 256, 8),
    ("layer_r4", 512, 512, 4),
]

NZ, NGF, NDF, NC, SIZE = 100, 64, 64, 3, 64


def build_networks(torch):
    nn = torch.nn

    class LayerNorm2d(nn.Module):
        """Layer norm over (C, H, W) of each sample, per-channel scale (1) and shift (0)."""

        def __init__(self, c):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c))
            self.bias = nn.Parameter(torch.zeros(c))

        def forward(self, x):
            x = nn.functional.layer_norm(x, x.shape[1:], eps=1e-5)
            return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def generator():
        return nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(NGF * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def discriminator(norm):
        return nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
            norm(NDF * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),
            norm(NDF * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False),
            norm(NDF * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
            nn.Flatten(0),
        )

    def weights_init(m):
        name = m.__class__.__name__
        if name.find("Conv") != -1:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif name.find("BatchNorm") != -1:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)

    nets = generator(), discriminator(nn.BatchNorm2d), discriminator(LayerNorm2d)
    for net in nets:
        net.apply(weights_init)
    return nets


def attention_class(torch, conv):
    """SAGAN's self-attention block (src/nn/attention.rs): 1x1 query/key/value/out convolutions
    made by `conv(cin, cout, k, spectral, gain, bias)`, keys and values max-pooled 2x2."""
    nn, F = torch.nn, torch.nn.functional

    class Attention(nn.Module):
        def __init__(self, c, spectral):
            super().__init__()
            self.q = conv(c, c // 8, 1, spectral, 1.0, bias=False)
            self.k = conv(c, c // 8, 1, spectral, 1.0, bias=False)
            self.v = conv(c, c // 2, 1, spectral, 1.0, bias=False)
            self.o = conv(c // 2, c, 1, spectral, 1.0, bias=False)
            self.gamma = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            n, c, h, w = x.shape
            q = self.q(x).flatten(2).transpose(1, 2)
            k = F.max_pool2d(self.k(x), 2).flatten(2)
            v = F.max_pool2d(self.v(x), 2).flatten(2)
            attn = torch.softmax(q @ k, dim=-1)
            o = (v @ attn.transpose(1, 2)).view(n, c // 2, h, w)
            return x + self.gamma * self.o(o)

    return Attention


def build_resnet(torch, size=64, nz=128, ngf=32, ndf=32, g_sn=False, attention=0):
    """facegan's resnet family (src/models/resnet.rs): SN in D always (the sngan/sagan presets),
    in G with g_sn; self-attention after the block whose output has side `attention`, with
    max-pooled keys and values; Xavier-uniform weights (gain sqrt 2 in residual branches)."""
    nn, F = torch.nn, torch.nn.functional
    sn = nn.utils.spectral_norm

    def conv(cin, cout, k, spectral, gain, bias=True):
        c = nn.Conv2d(cin, cout, k, 1, k // 2, bias=bias)
        nn.init.xavier_uniform_(c.weight, gain)
        if bias:
            nn.init.zeros_(c.bias)
        return sn(c) if spectral else c

    def linear(cin, cout, spectral):
        lin = nn.Linear(cin, cout)
        nn.init.xavier_uniform_(lin.weight, 1.0)
        nn.init.zeros_(lin.bias)
        return sn(lin) if spectral else lin

    Attention = attention_class(torch, conv)

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
            self.c1, self.c2 = conv(cin, cout, 3, g_sn, 2**0.5), conv(cout, cout, 3, g_sn, 2**0.5)
            self.sc = conv(cin, cout, 1, g_sn, 1.0)

        def forward(self, x):
            h = self.c1(F.interpolate(F.relu(self.bn1(x)), scale_factor=2))
            h = self.c2(F.relu(self.bn2(h)))
            return h + self.sc(F.interpolate(x, scale_factor=2))

    class Down(nn.Module):
        def __init__(self, cin, cout, first, down):
            super().__init__()
            self.first, self.down = first, down
            self.c1, self.c2 = conv(cin, cout, 3, True, 2**0.5), conv(cout, cout, 3, True, 2**0.5)
            self.sc = conv(cin, cout, 1, True, 1.0) if (first or down or cin != cout) else None

        def forward(self, x):
            h = x if self.first else F.relu(x)
            h = self.c2(F.relu(self.c1(h)))
            if self.down:
                h = F.avg_pool2d(h, 2)
            if self.sc is None:
                s = x
            elif self.first:
                s = self.sc(F.avg_pool2d(x, 2))
            else:
                s = self.sc(x)
                s = F.avg_pool2d(s, 2) if self.down else s
            return h + s

    stages = (size // 4).bit_length() - 1

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.top = ngf << stages
            self.input = linear(nz, 16 * self.top, g_sn)
            blocks = []
            for i in range(stages):
                blocks.append(Up(ngf << (stages - i), ngf << (stages - i - 1)))
                if attention == 8 << i:
                    blocks.append(Attention(ngf << (stages - i - 1), g_sn))
            self.blocks = nn.Sequential(*blocks)
            self.bn = nn.BatchNorm2d(ngf)
            self.out = conv(ngf, 3, 3, g_sn, 1.0)

        def forward(self, z):
            h = self.blocks(self.input(z).view(-1, self.top, 4, 4))
            return torch.tanh(self.out(F.relu(self.bn(h))))

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, side = [], size
            for i in range(stages + 1):
                last = i == stages
                blocks.append(Down(3 if i == 0 else ndf << (i - 1), ndf << i, i == 0, not last))
                side = side if last else side // 2
                if attention == side and not last:
                    blocks.append(Attention(ndf << i, True))
            self.blocks = nn.Sequential(*blocks)
            self.head = linear(ndf << stages, 1, True)

        def forward(self, x):
            return self.head(F.relu(self.blocks(x)).sum((2, 3))).flatten()

    return G(), D()


def build_stylegan2(torch, size=64, nz=256, w_dim=256, ngf=32, ndf=32, mapping=8, mbstd=4):
    """facegan's stylegan2 family (src/models/stylegan2.rs) layer for layer."""
    import math

    nn, F = torch.nn, torch.nn.functional

    def width(base, res):
        return min(base * size // res, 8 * base)

    def lrelu(x):
        return F.leaky_relu(x, 0.2) * math.sqrt(2)

    blur_k = torch.tensor([1.0, 2.0, 1.0])
    blur_k = (blur_k[:, None] * blur_k[None, :] / 16).view(1, 1, 3, 3)

    def blur(x):
        c = x.shape[1]
        return F.conv2d(x, blur_k.expand(c, 1, 3, 3), padding=1, groups=c)

    def up_blur(x):
        return blur(F.interpolate(x, scale_factor=2, mode="nearest"))

    def down_blur(x):
        return F.avg_pool2d(blur(x), 2)

    class EqLinear(nn.Module):
        def __init__(self, cin, cout, lr_mul=1.0, bias_init=0.0, act=False):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
            self.bias = nn.Parameter(torch.full([cout], float(bias_init)))
            self.wg, self.bg, self.act = lr_mul / math.sqrt(cin), lr_mul, act

        def forward(self, x):
            y = F.linear(x, self.weight * self.wg, self.bias * self.bg)
            return lrelu(y) if self.act else y

    class EqConv(nn.Module):
        def __init__(self, cin, cout, k, bias=True, act=True):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
            self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
            self.wg, self.act, self.pad = 1 / math.sqrt(cin * k * k), act, k // 2

        def forward(self, x):
            y = F.conv2d(x, self.weight * self.wg, self.bias, padding=self.pad)
            return lrelu(y) if self.act else y

    class ModConv(nn.Module):
        def __init__(self, cin, cout, k, demod):
            super().__init__()
            self.affine = EqLinear(w_dim, cin, bias_init=1.0)
            self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
            self.demod, self.gain, self.pad = demod, 1.0 if demod else 1 / math.sqrt(cin * k * k), k // 2

        def forward(self, x, w):
            s = self.affine(w) * self.gain
            y = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.pad)
            if self.demod:
                d = (s.square() @ self.weight.square().sum([2, 3]).t() + 1e-8).rsqrt()
                y = y * d[:, :, None, None]
            return y

    class Layer(nn.Module):
        def __init__(self, cin, cout, up):
            super().__init__()
            self.conv, self.up = ModConv(cin, cout, 3, True), up
            self.noise_strength = nn.Parameter(torch.zeros(1))
            self.bias = nn.Parameter(torch.zeros(cout))

        def forward(self, x, w):
            x = up_blur(x) if self.up else x
            y = self.conv(x, w)
            noise = torch.randn(y.shape[0], 1, y.shape[2], y.shape[3])
            return lrelu(y + noise * self.noise_strength + self.bias[None, :, None, None])

    class ToRgb(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.conv, self.bias = ModConv(cin, 3, 1, False), nn.Parameter(torch.zeros(3))

        def forward(self, x, w):
            return self.conv(x, w) + self.bias[None, :, None, None]

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.mapping = nn.ModuleList(
                [EqLinear(nz if i == 0 else w_dim, w_dim, 0.01, 0.0, True) for i in range(mapping)])
            self.register_buffer("w_avg", torch.zeros(w_dim))
            c4 = width(ngf, 4)
            self.const = nn.Parameter(torch.randn(c4, 4, 4))
            layers, rgbs, res = [Layer(c4, c4, False)], [ToRgb(c4)], 8
            while res <= size:
                cin, cout = width(ngf, res // 2), width(ngf, res)
                layers += [Layer(cin, cout, True), Layer(cout, cout, False)]
                rgbs.append(ToRgb(cout))
                res *= 2
            self.layers, self.rgbs = nn.ModuleList(layers), nn.ModuleList(rgbs)
            self.num_ws = len(layers) + 1

        def map(self, z):
            x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
            for l in self.mapping:
                x = l(x)
            return x

        def ws(self, z, z2=None, cutoff=None, track=False):
            w = self.map(z)
            if track:
                with torch.no_grad():
                    self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.995))
            ws = w[:, None, :].repeat(1, self.num_ws, 1)
            if z2 is not None:
                ws2 = self.map(z2)[:, None, :].repeat(1, self.num_ws, 1)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], 1)
            return ws

        def synthesis(self, ws):
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.layers[0](x, ws[:, 0])
            img = self.rgbs[0](x, ws[:, 1])
            for b in range(1, len(self.rgbs)):
                i, j = 2 * b - 1, 2 * b
                x = self.layers[i](x, ws[:, i])
                x = self.layers[j](x, ws[:, j])
                img = up_blur(img) + self.rgbs[b](x, ws[:, j + 1])
            return img

    class DBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv0, self.conv1 = EqConv(cin, cin, 3), EqConv(cin, cout, 3)
            self.skip = EqConv(cin, cout, 1, bias=False, act=False)

        def forward(self, x):
            h = self.conv1(down_blur(self.conv0(x)))
            return (h + self.skip(down_blur(x))) * math.sqrt(0.5)

    def minibatch_stddev(x, group):
        n, c, h, w = x.shape
        g = min(group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, n // g, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])
        y = y.reshape(1, n // g, 1, 1, 1).repeat(g, 1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], 1)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.fromrgb = EqConv(3, width(ndf, size), 1)
            blocks, res = [], size
            while res > 4:
                blocks.append(DBlock(width(ndf, res), width(ndf, res // 2)))
                res //= 2
            self.blocks = nn.ModuleList(blocks)
            c4 = width(ndf, 4)
            self.conv = EqConv(c4 + (1 if mbstd else 0), c4, 3)
            self.fc, self.out = EqLinear(c4 * 16, c4, act=True), EqLinear(c4, 1)

        def forward(self, x):
            h = self.fromrgb(x)
            for b in self.blocks:
                h = b(h)
            if mbstd:
                h = minibatch_stddev(h, mbstd)
            return self.out(self.fc(self.conv(h).flatten(1))).flatten()

    return Generator(), Discriminator()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=5, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations before them")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--json", help="also write the numbers as JSON to this file")
    p.add_argument("--only", default="", help="comma-separated name prefixes of the measurements to take")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.iters < 1 or a.warmup < 0 or a.threads < 1:
        p.error("--batch-size, --iters and --threads must be at least 1, --warmup at least 0")
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    for prefix in a.only:
        if not any(n.startswith(prefix) for n in BENCH_NAMES):
            p.error(f"'{prefix}' starts the name of no measurement; the measurements are {', '.join(BENCH_NAMES)}")
    return a


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv):
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.batch_size
    entries = []

    def selected(name):
        return not args.only or any(name.startswith(p) for p in args.only)

    def run(name, images, f):
        if not selected(name):
            return
        for _ in range(args.warmup):
            f()
        walls, cpus = [], []
        for _ in range(args.iters):
            cpu, start = time.process_time(), time.perf_counter()
            f()
            walls.append((time.perf_counter() - start) * 1e3)
            cpus.append((time.process_time() - cpu) * 1e3)
        ms = statistics.median_high(walls)
        entry = {
            "name": name,
            "ms": ms,
            "cpu_ms": statistics.median_high(cpus),
            "images_per_s": n / (ms / 1e3) if images else None,
        }
        print(f"{name:<32} {ms:10.1f} ms", file=sys.stderr)
        entries.append(entry)

    if selected("matmul_2048"):
        a = torch.randn(2048, 2048)
        run("matmul_2048", False, lambda: a @ a)

    peak, peak_after = None, "end"
    net_g, net_d, critic = build_networks(torch)
    real = torch.rand(n, NC, SIZE, SIZE) * 2 - 1
    z = torch.randn(n, NZ, 1, 1)

    def g_fwd_eval():
        net_g.eval()
        with torch.no_grad():
            net_g(z)
        net_g.train()

    run("g_fwd_eval", True, g_fwd_eval)
    run("g_fwd_train", True, lambda: net_g(z))

    def d_fwd_bwd():
        net_d.zero_grad(set_to_none=True)
        net_d(real).mean().backward()

    run("d_fwd_bwd", True, d_fwd_bwd)

    g_ema = build_networks(torch)[0]
    g_ema.load_state_dict(net_g.state_dict())
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def train_step():
        fake = net_g(torch.randn(n, NZ, 1, 1))
        opt_d.zero_grad(set_to_none=True)
        d_loss = F.softplus(-net_d(real)).mean() + F.softplus(net_d(fake.detach())).mean()
        d_loss.backward()
        opt_d.step()
        net_d.requires_grad_(False)  # facegan's Mode::FROZEN: no weight gradients for D
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.softplus(-net_d(fake)).mean()
        g_loss.backward()
        opt_g.step()
        net_d.requires_grad_(True)
        with torch.no_grad():
            ema, cur = list(g_ema.parameters()), list(net_g.parameters())
            torch._foreach_lerp_(ema, cur, 1 - 0.999)
            for b_ema, b in zip(g_ema.buffers(), net_g.buffers()):
                b_ema.copy_(b)
        return d_loss.item(), g_loss.item()

    if selected("train_step"):
        run("train_step", True, train_step)
        peak, peak_after = peak_rss_mib(), "train_step"
    del g_ema, opt_g, opt_d

    for name, n_critic, lrs, g_sn, attention in [
        ("sngan64_train_step", 5, (2e-4, 2e-4), False, 0),
        ("sagan64_train_step", 1, (1e-4, 4e-4), True, 32),
    ]:
        if not selected(name):
            continue
        rg, rd = build_resnet(torch, g_sn=g_sn, attention=attention)
        r_ema = build_resnet(torch, g_sn=g_sn, attention=attention)[0]
        r_ema.load_state_dict(rg.state_dict())
        print(f"{name}: G {sum(p.numel() for p in rg.parameters())} and D "
              f"{sum(p.numel() for p in rd.parameters())} parameters", file=sys.stderr)
        r_opt_g = torch.optim.Adam(rg.parameters(), lr=lrs[0], betas=(0.0, 0.9))
        r_opt_d = torch.optim.Adam(rd.parameters(), lr=lrs[1], betas=(0.0, 0.9))
        reals = [torch.rand(n, NC, SIZE, SIZE) * 2 - 1 for _ in range(n_critic)]

        def resnet_step(rg=rg, rd=rd, r_ema=r_ema, r_opt_g=r_opt_g, r_opt_d=r_opt_d, reals=reals):
            fake = None
            for real in reals:
                fake = rg(torch.randn(n, 128))
                r_opt_d.zero_grad(set_to_none=True)
                d_loss = F.relu(1 - rd(real)).mean() + F.relu(1 + rd(fake.detach())).mean()
                d_loss.backward()
                r_opt_d.step()
            if len(reals) > 1:
                fake = rg(torch.randn(n, 128))
            rd.requires_grad_(False)
            r_opt_g.zero_grad(set_to_none=True)
            g_loss = -rd(fake).mean()
            g_loss.backward()
            r_opt_g.step()
            rd.requires_grad_(True)
            with torch.no_grad():
                torch._foreach_lerp_(list(r_ema.parameters()), list(rg.parameters()), 1 - 0.999)
                for b_ema, b in zip(r_ema.buffers(), rg.buffers()):
                    b_ema.copy_(b)

        run(name, True, resnet_step)
        entries[-1]["images_per_s"] *= n_critic
        del rg, rd, r_ema, r_opt_g, r_opt_d

    for name, r1, pl in [
        ("stylegan2_64_step_plain", False, False),
        ("stylegan2_64_step_r1", True, False),
        ("stylegan2_64_step_pl", False, True),
    ]:
        if not selected(name):
            continue
        sg, sd = build_stylegan2(torch)
        s_ema = build_stylegan2(torch)[0]
        s_ema.load_state_dict(sg.state_dict())
        print(f"{name}: G {sum(p.numel() for p in sg.parameters())} and D "
              f"{sum(p.numel() for p in sd.parameters())} parameters", file=sys.stderr)
        s_opt_g = torch.optim.Adam(sg.parameters(), lr=0.002, betas=(0.0, 0.99))
        s_opt_d = torch.optim.Adam(sd.parameters(), lr=0.0025 * 16 / 17, betas=(0.0, 0.99))
        s_real = torch.rand(n, NC, SIZE, SIZE) * 2 - 1
        pl_mean = [0.0]

        def latents(m):
            z = torch.randn(m, 256)
            if torch.rand([]) < 0.9:
                return z, torch.randn(m, 256), int(torch.randint(1, sg.num_ws, []))
            return z, None, None

        def stylegan2_step(sg=sg, sd=sd, s_ema=s_ema, s_opt_g=s_opt_g, s_opt_d=s_opt_d, r1=r1, pl=pl):
            # D: non-saturating loss on the real batch and detached fakes (+ R1 on the reals,
            # from its own pass of D, as facegan's penalty does).
            z, z2, cut = latents(n)
            fake = sg.synthesis(sg.ws(z, z2, cut, track=True))
            s_opt_d.zero_grad(set_to_none=True)
            d_loss = F.softplus(-sd(s_real)).mean() + F.softplus(sd(fake.detach())).mean()
            if r1:
                x = s_real.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(sd(x).sum(), x, create_graph=True)
                d_loss = d_loss + 0.0256 * 16 * 0.5 * g.square().flatten(1).sum(1).mean()
            d_loss.backward()
            s_opt_d.step()
            # G: the same fakes through D with frozen weights (+ path length on half a batch).
            sd.requires_grad_(False)
            s_opt_g.zero_grad(set_to_none=True)
            g_loss = F.softplus(-sd(fake)).mean()
            if pl:
                z, z2, cut = latents(n // 2)
                ws = sg.ws(z, z2, cut)
                img = sg.synthesis(ws)
                y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
                (g,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
                lengths = g.square().sum(2).mean(1).sqrt()
                pl_mean[0] += (lengths.mean().item() - pl_mean[0]) * 0.01
                g_loss = g_loss + 2.0 * 4 * (lengths - pl_mean[0]).square().mean()
            g_loss.backward()
            s_opt_g.step()
            sd.requires_grad_(True)
            with torch.no_grad():
                torch._foreach_lerp_(list(s_ema.parameters()), list(sg.parameters()), 1 - 0.998)
                for b_ema, b in zip(s_ema.buffers(), sg.buffers()):
                    b_ema.copy_(b)

        run(name, True, stylegan2_step)
        del sg, sd, s_ema, s_opt_g, s_opt_d

    opt_c = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.9))

    def critic_step():
        with torch.no_grad():
            fake = net_g(z)
        opt_c.zero_grad(set_to_none=True)
        adv = critic(fake).mean() - critic(real).mean()
        eps = torch.rand(n, 1, 1, 1)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
        gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        (adv + 10.0 * gp).backward()
        opt_c.step()

    run("wgan_gp_critic_step", True, critic_step)

    x = torch.randn(n, 128, 32, 32)
    xt = torch.randn(n, 256, 16, 16)
    w = torch.randn(256, 128, 4, 4) * 0.05
    layer_ops = [
        ("conv2d", x, lambda x, w: F.conv2d(x, w, stride=2, padding=1)),
        ("conv_transpose2d", xt, lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1)),
    ]
    for name, inp, op in layer_ops:
        run(f"{name}_fwd", False, lambda: op(inp, w))
        xv, wv = inp.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def fwd_bwd():
            y = op(xv, wv)
            gx, gw = torch.autograd.grad(y, (xv, wv), torch.ones_like(y))
            assert gx is not None and gw is not None

        run(f"{name}_fwd_bwd", False, fwd_bwd)

    for name, transposed, c_in, c_out, side, stride, padding in DCGAN64_LAYERS:
        if not selected(f"{name}_fwd_bwd"):
            continue
        lx = torch.randn(n, c_in, side, side).requires_grad_(True)
        shape = (c_in, c_out, 4, 4) if transposed else (c_out, c_in, 4, 4)
        lw = (torch.randn(*shape) * 0.05).requires_grad_(True)
        conv = F.conv_transpose2d if transposed else F.conv2d

        def layer_fwd_bwd(lx=lx, lw=lw, conv=conv, stride=stride, padding=padding):
            y = conv(lx, lw, stride=stride, padding=padding)
            gx, gw = torch.autograd.grad(y, (lx, lw), torch.ones_like(y))
            assert gx is not None and gw is not None

        run(f"{name}_fwd_bwd", False, layer_fwd_bwd)

    for name, c_in, c_out, side in RESNET64_LAYERS:
        if not selected(f"{name}_fwd_bwd"):
            continue
        rx = torch.randn(n, c_in, side, side).requires_grad_(True)
        rw = (torch.randn(c_out, c_in, 3, 3) * 0.05).requires_grad_(True)

        def resnet_layer_fwd_bwd(rx=rx, rw=rw):
            y = F.conv2d(rx, rw, stride=1, padding=1)
            gx, gw = torch.autograd.grad(y, (rx, rw), torch.ones_like(y))
            assert gx is not None and gw is not None

        run(f"{name}_fwd_bwd", False, resnet_layer_fwd_bwd)

    if selected("attention_fwd_bwd"):

        def plain_conv(cin, cout, k, spectral, gain, bias=True):
            c = torch.nn.Conv2d(cin, cout, k, 1, k // 2, bias=bias)
            torch.nn.init.xavier_uniform_(c.weight, gain)
            return c

        attn = attention_class(torch, plain_conv)(64, False)
        with torch.no_grad():
            attn.gamma.fill_(0.5)
        ax = torch.randn(n, 64, 32, 32).requires_grad_(True)
        attn_inputs = [ax, *attn.parameters()]

        def attention_fwd_bwd():
            grads = torch.autograd.grad(attn(ax).sum(), attn_inputs)
            assert all(g is not None for g in grads)

        run("attention_fwd_bwd", False, attention_fwd_bwd)

    if selected("inception"):
        # The FID network on the same weights file as facegan, resize to 299 included.
        import os
        import numpy as np

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from reference_features import default_weights, load_net, to_network_input

        path = default_weights()
        if os.path.exists(path):
            net = load_net(path)
            ims = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)

            def inception():
                with torch.no_grad():
                    net(to_network_input(ims))

            run("inception", True, inception)
        elif args.only:
            sys.exit(f"inception: {path} does not exist (bash scripts/fetch-inception.sh)")
        else:
            print(f"inception skipped: {path} does not exist", file=sys.stderr)

    if peak is None:
        peak = peak_rss_mib()
    report = {
        "implementation": "pytorch",
        "torch_version": torch.__version__,
        "preset": "dcgan-64",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": n,
        "iters": args.iters,
        "warmup": args.warmup,
        "entries": entries,
        "peak_rss_mib": peak,
        "peak_rss_after": peak_after,
    }
    print(
        f"PyTorch {torch.__version__} bench: dcgan-64 on the cpu, batch {n}, median of {args.iters} calls "
        f"after {args.warmup} warm-up, {report['threads']} threads"
    )
    print(f"{'measurement':<28} {'wall ms':>10} {'cpu ms':>10} {'images/s':>10}")
    for e in entries:
        ips = "-" if e["images_per_s"] is None else f"{e['images_per_s']:.1f}"
        print(f"{e['name']:<28} {e['ms']:>10.1f} {e['cpu_ms']:>10.1f} {ips:>10}")
    print(f"peak RSS after {peak_after}: {peak:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
