"""The parts of a refinement step, built in one place (docs/method.md §10): step 0 trains the
base model with the classification losses, steps >= 1 the full model with the pseudo instance
loss. This is the only place that tells the two apart; both models take the same inputs (the
base model ignores the proposals, its loss the pseudo labels)."""
import torch

from losses import ASMLocBaseLoss, ASMLocLoss
from model import ASMLoc, ASMLocBase

KINDS = {"base": (ASMLocBase, ASMLocBaseLoss), "full": (ASMLoc, ASMLocLoss)}


def model_kind(step):
    """"base" for step 0, "full" after (the checkpoints record it)."""
    return "base" if step == 0 else "full"


def build_model(args, step):
    return KINDS[model_kind(step)][0].from_config(args).to(args.device)


def build_loss(args, step):
    return KINDS[model_kind(step)][1].from_config(args)


def build_optimizer(args, model):
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999),
                            weight_decay=args.weight_decay)


def build_model_for_loading(args, step):
    """build_model without the random initialisation its weights would get (about 0.5 s of CPU
    per full model at D = 2048): built on the meta device, then given uninitialised memory. Only
    when every buffer is in the state_dict (the strict load overwrites all of it); else the
    plain build."""
    with torch.device("meta"):
        model = KINDS[model_kind(step)][0].from_config(args)
    saved = set(model.state_dict())
    if any(name not in saved for name, _ in model.named_buffers()):
        return build_model(args, step)
    return model.to_empty(device=args.device)
