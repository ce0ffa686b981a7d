"""features/i3d.py: the parameter names and shapes of the PyTorch I3D port (so its published files
load strictly), TensorFlow 'same' padding, output sizes; features/extract.py load_i3d's checks of
weight files."""
import hashlib

import pytest
import torch
import torch.nn.functional as F

from features import extract
from features.i3d import InceptionI3d, MaxPoolSame, Unit3D, same_padding

# Written from the architecture (Carreira and Zisserman 2017: Inception-v1 of Szegedy et al. 2015,
# Table 1, inflated to 3D; the port's names): stem units (name, input channels, output channels,
# cubic kernel) ...
STEM = [("Conv3d_1a_7x7", "in", 64, 7), ("Conv3d_2b_1x1", 64, 64, 1),
        ("Conv3d_2c_3x3", 64, 192, 3)]
# ... and Inception blocks (name, input channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj); the "5x5" branch of Inception-v1 is a 3x3x3 convolution in I3D
BLOCKS = [
    ("Mixed_3b", 192, 64, 96, 128, 16, 32, 32),
    ("Mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("Mixed_4b", 480, 192, 96, 208, 16, 48, 64),
    ("Mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("Mixed_4d", 512, 128, 128, 256, 24, 64, 64),
    ("Mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("Mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    ("Mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    ("Mixed_5c", 832, 384, 192, 384, 48, 128, 128),
]


def published_layout(in_channels, counters=True):
    """[(name, shape)] of the port's state dict, in order; counters: BatchNorm's
    num_batches_tracked."""
    rows = []

    def unit(name, cin, cout, k):
        rows.append((f"{name}.conv3d.weight", (cout, cin, k, k, k)))
        rows.extend((f"{name}.bn.{p}", (cout,))
                    for p in ("weight", "bias", "running_mean", "running_var"))
        if counters:
            rows.append((f"{name}.bn.num_batches_tracked", ()))

    for name, cin, cout, k in STEM:
        unit(name, in_channels if cin == "in" else cin, cout, k)
    for name, cin, b0, b1a, b1b, b2a, b2b, b3b in BLOCKS:
        unit(f"{name}.b0", cin, b0, 1)
        unit(f"{name}.b1a", cin, b1a, 1)
        unit(f"{name}.b1b", b1a, b1b, 3)
        unit(f"{name}.b2a", cin, b2a, 1)
        unit(f"{name}.b2b", b2a, b2b, 3)
        unit(f"{name}.b3b", cin, b3b, 1)
    rows += [("logits.conv3d.weight", (400, 1024, 1, 1, 1)), ("logits.conv3d.bias", (400,))]
    return rows


@pytest.mark.parametrize("in_channels", [3, 2])
def test_state_dict_names_and_shapes_are_the_ports(in_channels):
    got = [(name, tuple(t.shape)) for name, t in InceptionI3d(in_channels).state_dict().items()]
    assert got == published_layout(in_channels)
    layout = dict(got)
    # hand-written spot checks
    assert layout["Conv3d_1a_7x7.conv3d.weight"] == (64, in_channels, 7, 7, 7)
    assert layout["Mixed_4b.b1b.conv3d.weight"] == (208, 96, 3, 3, 3)
    assert layout["Mixed_5c.b3b.bn.running_var"] == (128,)
    # units x (conv weight, 4 BatchNorm tensors, counter) + logits
    assert len(got) == (3 + 9 * 6) * 6 + 2


def test_batch_norm_settings():
    bn = InceptionI3d(3).Mixed_3b.b1b.bn
    assert (bn.eps, bn.momentum) == (0.001, 0.01)
    assert InceptionI3d(3).Conv3d_1a_7x7.conv3d.bias is None


def save_layout_file(path, in_channels, seed, counters=False):
    """A weight file with the published key layout and random values (old files lack the
    counters)."""
    gen = torch.Generator().manual_seed(seed)
    state = {name: (torch.zeros(shape, dtype=torch.long) if name.endswith("tracked") else
                    torch.rand(shape, generator=gen) + (0.5 if "running_var" in name else 0.0))
             for name, shape in published_layout(in_channels, counters)}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("counters", [False, True])
def test_published_layout_file_loads_strictly(tmp_path, counters):
    state = save_layout_file(tmp_path / "rgb_imagenet.pt", 3, seed=1, counters=counters)
    model = extract.load_i3d(str(tmp_path / "rgb_imagenet.pt"), "rgb")
    assert not model.training
    loaded = model.state_dict()
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    InceptionI3d(2).load_state_dict(dict(published_layout_tensors(2)), strict=True)


def published_layout_tensors(in_channels):
    return [(name, torch.zeros(shape)) for name, shape in published_layout(in_channels)]


def test_weight_file_errors(tmp_path):
    rgb, flow = tmp_path / "rgb_imagenet.pt", tmp_path / "flow_imagenet.pt"
    save_layout_file(rgb, 3, seed=2)
    save_layout_file(flow, 2, seed=3)
    cases = {"missing": (str(tmp_path / "none.pt"), "rgb", "not found"),
             "swapped": (str(flow), "rgb", "holds flow weights (2 input channels)"),
             "swapped back": (str(rgb), "flow", "holds RGB weights (3 input channels)")}
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(rgb.read_bytes()[: rgb.stat().st_size // 2])
    cases["truncated"] = (str(truncated), "rgb", "not a readable PyTorch weight file")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    cases["wrong keys"] = (str(other), "rgb", "does not match the I3D layout")
    charades = tmp_path / "charades.pt"
    state = torch.load(rgb)
    state["logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.zeros(157)
    torch.save(state, charades)
    cases["other classes"] = (str(charades), "rgb",
                              "logits.conv3d.weight has shape (157, 1024, 1, 1, 1)")
    for case, (path, stream, message) in cases.items():
        with pytest.raises(extract.ExtractError) as err:
            extract.load_i3d(path, stream)
        assert message in str(err.value) and path in str(err.value), case
        assert "\n" not in str(err.value), case
    assert hashlib.sha256(rgb.read_bytes()).hexdigest() == extract.sha256(rgb)


# ----------------------------------------------------------------------------- padding and sizes
def test_same_padding_hand_computed():
    assert same_padding(224, 7, 2) == (2, 3)       # total 7 - 2 = 5, the odd pixel after
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)         # 7 % 2 = 1: total 3 - 1 = 2
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(4, 2, 2) == (0, 0)
    assert same_padding(5, 1, 1) == (0, 0)


def test_unit_equals_explicit_padding_conv():
    """Oracle: F.conv3d on a hand-padded input, then eval BatchNorm and ReLU written out."""
    torch.manual_seed(0)
    unit = Unit3D(3, 5, (3, 7, 7), (1, 2, 2)).eval()
    unit.bn.running_mean.uniform_(-1, 1)
    unit.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 5, 9, 10)
    # t: stride 1, k 3 -> (1, 1); h: 9 % 2 = 1 -> total 6 -> (3, 3);
    # w: 10 % 2 = 0 -> total 5 -> (2, 3)
    padded = F.pad(x, (2, 3, 3, 3, 1, 1))
    conv = F.conv3d(padded, unit.conv3d.weight, stride=(1, 2, 2))
    bn = unit.bn
    shape = (1, -1, 1, 1, 1)
    expected = torch.relu((conv - bn.running_mean.view(shape))
                          / torch.sqrt(bn.running_var.view(shape) + 0.001)
                          * bn.weight.view(shape) + bn.bias.view(shape))
    got = unit(x)
    assert got.shape == (2, 5, 5, 5, 5)                                        # ceil(size / stride)
    assert torch.allclose(got, expected, atol=1e-5 * 3 * 3 * 7 * 7 ** 0.5)


def test_max_pool_zero_padding_equals_tensorflow_on_relu_outputs():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(1, 4, 5, 7, 8))
    pool = MaxPoolSame((3, 3, 3), (2, 2, 2))
    # t 5 -> (1,1), h 7 -> (1,1), w 8 -> (0,1)
    minus_inf = F.pad(x, (0, 1, 1, 1, 1, 1), value=float("-inf"))
    assert torch.equal(pool(x), F.max_pool3d(minus_inf, 3, 2))


def test_output_sizes_and_snippet_features():
    torch.manual_seed(0)
    model = InceptionI3d(2).eval()
    x = torch.rand(2, 2, 16, 40, 33) * 2 - 1
    with torch.no_grad():
        block = model.block_output(x)
        assert block.shape == (2, 1024, 2, 2, 2)       # time / 8, space / 32 rounded up
        features = model.snippet_features(x)
        assert features.shape == (2, 1024)
        assert torch.allclose(features, F.avg_pool3d(block, (2, 2, 2)).flatten(1), atol=1e-6)
        assert model(x).shape == (2, 400)
        # snippets independent
        assert torch.allclose(model.snippet_features(x[:1]), features[:1], atol=1e-5)
