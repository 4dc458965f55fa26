"""pulmo's lung-nodule network: a small 3-level 3-D UNet with one logit channel."""
from __future__ import annotations

import torch
from torch import nn


def block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3x3 conv + BatchNorm + LeakyReLU."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.LeakyReLU(0.1, inplace=True),
    )


class NoduleNet(nn.Module):
    """UNet with widths w, 2w, 4w, 8w at 1, 1/2, 1/4, 1/8 resolution; input [N,1,D,H,W] in [0,1]."""

    def __init__(self, w: int = 8):
        super().__init__()
        self.w = w
        self.enc0, self.enc1, self.enc2 = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.mid = block(4 * w, 8 * w)
        self.up2, self.dec2 = nn.ConvTranspose3d(8 * w, 4 * w, 2, stride=2), block(8 * w, 4 * w)
        self.up1, self.dec1 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
        self.up0, self.dec0 = nn.ConvTranspose3d(2 * w, w, 2, stride=2), block(2 * w, w)
        self.head = nn.Conv3d(w, 1, 1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(self.pool(e0))
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], 1))
        return self.head(d0)

    def describe(self) -> str:
        w = self.w
        return (f"3-D UNet, 3 poolings (widths {w}/{2 * w}/{4 * w}/{8 * w}), 3x3x3 conv+BN+LeakyReLU, "
                "1x1x1 head; one channel of per-voxel nodule logits")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


DEVICE_HELP = "where the network runs: auto (cuda when torch sees a GPU, else cpu), cpu, cuda, cuda:N"


def pick_device(name: str) -> torch.device:
    """The torch device for a `--device` option: `auto` is cuda when torch sees a GPU, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
