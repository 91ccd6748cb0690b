"""Writes tests/fixtures/tiny.torchscript.pt: a three-layer TorchScript module (4 KB of
weights) whose archive has the structure of the FID Inception's, for the mutation tests of
the TorchScript reader (tests/mutation.rs). Run with a Python that has torch."""
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        # Float tensors only, as in the FID Inception's archive.
        self.bn.register_buffer("num_batches_tracked", None)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


torch.manual_seed(0)
module = torch.jit.trace(Tiny().eval(), torch.zeros(1, 3, 8, 8))
module.save("tests/fixtures/tiny.torchscript.pt")
