"""Losses (docs/method.md §3, §6) against numbers computed by hand on tiny inputs."""
import math

import pytest
import torch

import config
from losses import ASMLocBaseLoss, ASMLocLoss
from model import ModelOutput


def output(fg_cls, bg_cls, cas=None, uncertainty=None):
    fg_cls, bg_cls = torch.tensor(fg_cls), torch.tensor(bg_cls)
    cas = (torch.tensor(cas) if cas is not None
           else torch.full((fg_cls.shape[0], 1, fg_cls.shape[1]), 1 / 3))
    u = torch.tensor(uncertainty) if uncertainty is not None else None
    return ModelOutput(fg_cls, bg_cls, None, cas, cas, cas, u)


@pytest.fixture
def args():
    args = config.build_args("THUMOS", ["--device", "cpu"])   # lamb_fg 1, lamb_bg 0.5, lamb_abg 0.5
    args.action_cls_num = 2
    return args


def test_base_loss_hand_computed(args):
    out = output([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]], [[0.1, 0.2, 0.7], [0.0, 0.5, 0.5]])
    label = torch.tensor([[1.0, 0.0], [1.0, 1.0]])          # second video: fg_label [0.5, 0.5, 0]
    loss, terms = ASMLocBaseLoss.from_config(args)(label, out)
    fg = (-math.log(0.5) + math.log(4)) / 2
    bg = (-math.log(0.7) - math.log(0.5)) / 2
    abg = (-math.log(0.1) - 0.5 * math.log(1e-7) - 0.5 * math.log(0.5)) / 2  # p = 0 clamps to 1e-7
    cls = fg + 0.5 * bg + 0.5 * abg
    assert terms["fg_loss"] == pytest.approx(fg, rel=1e-6)
    assert terms["bg_loss"] == pytest.approx(bg, rel=1e-6)
    assert terms["abg_loss"] == pytest.approx(abg, rel=1e-6)
    assert terms["cls_loss"] == pytest.approx(cls, rel=1e-6)
    assert terms["total"] == pytest.approx(cls, rel=1e-6)
    assert loss.item() == pytest.approx(cls, rel=1e-6)


def test_pseudo_instance_loss_hand_computed(args):
    cas = [[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]]
    pil = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]])
    out = output([[0.5, 0.3, 0.2]], [[0.1, 0.2, 0.7]], cas, [[[0.1], [-0.2]]])
    loss, terms = ASMLocLoss.from_config(args)(torch.tensor([[1.0, 0.0]]), out, pil)
    expected = (-(math.exp(-0.1) * math.log(0.6)
                  + math.exp(0.2) * (0.5 * math.log(0.2) + 0.5 * math.log(0.6))) / 2
                + 0.2 * (0.1 - 0.2) / 2)
    assert terms["pseudo_instance_loss"] == pytest.approx(expected, rel=1e-6)
    assert terms["total"] == pytest.approx(terms["cls_loss"] + expected, rel=1e-6)
    # no uncertainty head: u = 0
    _, terms = ASMLocLoss.from_config(args)(torch.tensor([[1.0, 0.0]]),
                                            out._replace(uncertainty=None), pil)
    no_u = -(math.log(0.6) + 0.5 * math.log(0.2) + 0.5 * math.log(0.6)) / 2
    assert terms["pseudo_instance_loss"] == pytest.approx(no_u, rel=1e-6)


def test_pseudo_instance_loss_switch(args):
    out = output([[0.5, 0.3, 0.2]], [[0.1, 0.2, 0.7]])
    args.use_pseudo_instance_loss = False
    loss, terms = ASMLocLoss.from_config(args)(torch.tensor([[0.0, 1.0]]), out)
    assert "pseudo_instance_loss" not in terms
    assert terms["total"] == pytest.approx(terms["cls_loss"])
    args.use_pseudo_instance_loss = True
    with pytest.raises(ValueError, match="pseudo_label"):
        ASMLocLoss.from_config(args)(torch.tensor([[0.0, 1.0]]), out)
