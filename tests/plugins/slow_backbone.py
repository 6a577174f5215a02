"""tiny_cnn that sleeps 0.3 s per training batch: a run whose length does not depend on the
machine's speed (the time-limit test needs a run longer than a 1-minute SLURM limit)."""

import time

from torch import nn

from fusion_lab.registries import BACKBONES


@BACKBONES.register("slow_tiny_cnn")
class SlowTinyCNN(nn.Module):
    """Three strided conv stages (8/16/32 channels) and a 0.3 s sleep per training batch."""

    def __init__(self, pretrained=False, out_indices=(-3, -2, -1)):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = block(3, 8, 8)
        self.s4 = block(8, 16, 2)
        self.s5 = block(16, 32, 2)
        self.out_channels, self.reductions = [8, 16, 32], [8, 16, 32]

    def forward(self, x):
        if self.training:
            time.sleep(0.3)
        s3 = self.stem(x)
        s4 = self.s4(s3)
        return [s3, s4, self.s5(s4)]
