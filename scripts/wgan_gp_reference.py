#!/usr/bin/env python3
"""Writes tests/fixtures/wgan_gp_reference.json: a WGAN-GP penalty and its gradient with
respect to a small conv critic's weights, computed by PyTorch with create_graph=True.

The critic is D(x) = v . leaky_relu(conv2d(x, w1, b1, stride 2, pad 1), 0.2) + c, flattened
per sample. Inputs, weights and the interpolation coefficients are all written into the
fixture, so the Rust test (tests/wgan_gp_fixture.rs) rebuilds exactly the same computation.
Run with a Python that has torch (a venv outside the repository; never a build dependency):
    /work/venv-torch/bin/python scripts/wgan_gp_reference.py
"""
import json
import pathlib

import torch

torch.manual_seed(2026)
dt = torch.float64
n, c_in, h, w, c_out, k = 3, 2, 6, 6, 4, 4
real = torch.randn(n, c_in, h, w, dtype=dt)
fake = torch.randn(n, c_in, h, w, dtype=dt)
eps = torch.rand(n, 1, 1, 1, dtype=dt)
w1 = (0.3 * torch.randn(c_out, c_in, k, k, dtype=dt)).requires_grad_()
b1 = (0.1 * torch.randn(c_out, dtype=dt)).requires_grad_()
h_out = (h + 2 - k) // 2 + 1
v = (0.5 * torch.randn(c_out * h_out * h_out, dtype=dt)).requires_grad_()


def critic(x):
    hid = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(x, w1, b1, stride=2, padding=1), 0.2)
    return hid.flatten(1) @ v


x_hat = (eps * real + (1 - eps) * fake).requires_grad_()
out = critic(x_hat)
(g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
penalty = ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
d_loss = critic(fake).mean() - critic(real).mean()
total = d_loss + 10.0 * penalty
gw1, gb1, gv = torch.autograd.grad(total, [w1, b1, v])

flat = lambda t: t.detach().flatten().tolist()
fixture = {
    "about": "WGAN-GP reference from scripts/wgan_gp_reference.py (PyTorch %s, create_graph=True)" % torch.__version__,
    "shapes": {"x": [n, c_in, h, w], "w1": [c_out, c_in, k, k], "b1": [c_out], "v": [c_out * h_out * h_out]},
    "real": flat(real), "fake": flat(fake), "eps": flat(eps),
    "w1": flat(w1), "b1": flat(b1), "v": flat(v),
    "penalty": penalty.item(), "d_loss": d_loss.item(),
    "grad_w1": flat(gw1), "grad_b1": flat(gb1), "grad_v": flat(gv),
}
path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wgan_gp_reference.json"
path.write_text(json.dumps(fixture, indent=1) + "\n")
print("wrote", path, "penalty", penalty.item())
