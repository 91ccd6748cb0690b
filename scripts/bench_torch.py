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
  conv2d_fwd[_bwd]     F.conv2d, x (N,128,32,32), w (256,128,4,4), stride 2, padding 1
  conv_transpose2d_fwd[_bwd]  F.conv_transpose2d, x (N,256,16,16), w (256,128,4,4), stride 2,
                       padding 1 (_bwd: gradients wrt x and w from a gradient of ones)
  layer_XN_fwd_bwd     each of dcgan-64's ten convolutions (g1-g5: G's transposed ones,
                       d1-d5: D's), forward and gradients wrt input and weight

Networks: pytorch/examples' DCGAN G and D (nz=100, ngf=ndf=64, no biases, N(0, 0.02) weights,
batch-norm scale N(1, 0.02)), D without its final Sigmoid (the losses take logits, as in
facegan); the WGAN-GP critic is that D with a layer norm over (C, H, W) with a per-channel
scale and shift in place of batch norm (facegan's d_norm = "layer").

The peak resident set (ru_maxrss) is read right after train_step, as facegan does; it
includes the memory of the Python interpreter and of torch itself.
"""

import argparse
import json
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
