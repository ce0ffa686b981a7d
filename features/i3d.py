"""Inception-I3D (Carreira and Zisserman, 2017): Inception-v1 inflated to 3D, the feature network
of the public THUMOS-14 / ActivityNet-1.3 I3D features.

Module and parameter names and shapes follow the widely used PyTorch port (`InceptionI3d`, weight
files rgb_imagenet.pt / flow_imagenet.pt), so its published state dicts load with strict=True: a
unit is `NAME.conv3d` (no bias) + `NAME.bn` (eps 1e-3, momentum 0.01) + ReLU; an Inception block
has branches b0 (1x1x1), b1a -> b1b (1x1x1 -> 3x3x3), b2a -> b2b (1x1x1 -> 3x3x3), b3a (3x3x3 max
pool) -> b3b (1x1x1); the classifier `logits.conv3d` is a 1x1x1 convolution with bias and no batch
norm.
Padding is TensorFlow's 'same' (the weights come from the TensorFlow release): computed from the
input size, the odd pixel at the end.

Shapes: N snippets, C input channels (3 RGB, 2 flow: x then y), T frames, H x W pixels.
"""
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1024          # channels of the last Inception block (Mixed_5c)

# (name, output channels of b0, b1a, b1b, b2a, b2b, b3b) of each Inception block, in order
INCEPTION_BLOCKS = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]
# max pools between the stages: (name, kernel (t, h, w), stride (t, h, w)), placed before the
# block named
POOLS_BEFORE = {
    "Conv3d_2b_1x1": ("MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}


def same_padding(size, kernel, stride):
    """TensorFlow 'same' padding of one axis: (before, after), the odd one after."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def pad_same(x, kernel, stride):
    """Zero-pad (N, C, T, H, W) so that a kernel/stride window gives ceil(size / stride) outputs."""
    pads = [same_padding(size, k, s) for size, k, s in zip(x.shape[2:], kernel, stride)]
    return F.pad(x, [p for pair in reversed(pads) for p in pair])      # F.pad wants (w, h, t) order


class MaxPoolSame(nn.Module):
    """Max pool with 'same' padding. Zeros pad the input: every pooled tensor follows a ReLU (>= 0),
    so a zero never exceeds a real value and the result equals TensorFlow's -inf padding."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """'same'-padded Conv3d, then (unless it is the classifier) BatchNorm3d and ReLU."""

    def __init__(self, in_channels, out_channels, kernel=(1, 1, 1), stride=(1, 1, 1),
                 classifier=False):
        super().__init__()
        self.kernel, self.stride, self.classifier = tuple(kernel), tuple(stride), classifier
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride,
                                bias=classifier)
        if not classifier:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return x if self.classifier else F.relu(self.bn(x))


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 |
    pool -> 1x1x1."""

    def __init__(self, in_channels, widths):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x):
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)                               # (N, out_channels, T, H, W)


class InceptionI3d(nn.Module):
    """The two-stream I3D's one stream: in_channels 3 (RGB in [-1, 1]) or 2 (TV-L1 flow x, y in
    [-1, 1])."""

    def __init__(self, in_channels, num_classes=400):
        super().__init__()
        self.in_channels = in_channels
        self.stages = []                        # names in forward order, each a child module
        self._add("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2)))
        self._add("Conv3d_2b_1x1", Unit3D(64, 64))
        self._add("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3)))
        channels = 192
        for name, widths in INCEPTION_BLOCKS:
            block = InceptionBlock(channels, widths)
            self._add(name, block)
            channels = block.out_channels
        assert channels == FEATURE_DIM
        self.logits = Unit3D(FEATURE_DIM, num_classes, classifier=True)

    def _add(self, name, module):
        if name in POOLS_BEFORE:
            pool_name, kernel, stride = POOLS_BEFORE[name]
            self.add_module(pool_name, MaxPoolSame(kernel, stride))
            self.stages.append(pool_name)
        self.add_module(name, module)
        self.stages.append(name)

    def block_output(self, x):
        """x (N, C, T, H, W) -> Mixed_5c output (N, 1024, T/8, H/32, W/32) (sizes rounded up)."""
        for name in self.stages:
            x = getattr(self, name)(x)
        return x

    def snippet_features(self, x):
        """x (N, C, 16, 224, 224) -> (N, 1024): the last Inception block averaged over time and
        space (the port's 2x7x7 average pool at this input size)."""
        return self.block_output(x).mean(dim=(2, 3, 4))                # (N, 1024)

    def forward(self, x):
        """Kinetics-400 logits (N, num_classes), averaged over the remaining time steps."""
        pooled = self.block_output(x).mean(dim=(3, 4), keepdim=True)    # (N, 1024, T', 1, 1)
        return self.logits(pooled).mean(dim=(2, 3, 4))                  # (N, num_classes)
