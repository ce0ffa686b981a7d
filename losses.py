"""ASM-Loc losses (docs/method.md §3, §6): video-level classification losses for every step and
the uncertainty-weighted pseudo instance loss of steps >= 1.

Both modules return (loss tensor, dict of float terms); the dict always has "total".
Shapes: B batch, T snippets, C action classes (C+1 with background).
"""
import torch
from torch import nn

EPS = 1e-7


def soft_ce(prob, target):
    """-mean over batch of sum_c target_c * log(max(prob_c, 1e-7)); prob, target (B, C+1)."""
    return -(target * torch.log(prob.clamp(min=EPS))).sum(dim=1).mean()


def normalise(label):
    """Divide each row by its sum. An all-zero row stays zero (instead of NaN)."""
    return label / label.sum(dim=1, keepdim=True).clamp(min=1e-12)


class ASMLocBaseLoss(nn.Module):
    """cls_loss = lamb_fg * CE(fg_cls, fg_label) + lamb_bg * CE(bg_cls, bg_label)
    + lamb_abg * CE(bg_cls, fg_label), with fg_label = [video label, 0] and bg_label = [0..0, 1]."""

    def __init__(self, lamb_fg=1.0, lamb_bg=0.5, lamb_abg=0.5):
        super().__init__()
        self.lamb_fg, self.lamb_bg, self.lamb_abg = lamb_fg, lamb_bg, lamb_abg

    @classmethod
    def from_config(cls, args):
        return cls(args.lamb_fg, args.lamb_bg, args.lamb_abg)

    def classification(self, video_label, out):
        """Returns cls_loss and its three terms as tensors."""
        video_label = video_label.to(out.fg_cls.dtype)                   # (B, C)
        B = video_label.shape[0]
        # (B, C+1)
        fg_label = normalise(torch.cat([video_label, video_label.new_zeros(B, 1)], dim=1))
        bg_label = torch.zeros_like(fg_label)
        bg_label[:, -1] = 1.0
        fg_loss = soft_ce(out.fg_cls, fg_label)
        bg_loss = soft_ce(out.bg_cls, bg_label)
        abg_loss = soft_ce(out.bg_cls, fg_label)
        cls_loss = self.lamb_fg * fg_loss + self.lamb_bg * bg_loss + self.lamb_abg * abg_loss
        return cls_loss, {"fg_loss": fg_loss, "bg_loss": bg_loss, "abg_loss": abg_loss,
                          "cls_loss": cls_loss}

    @staticmethod
    def as_floats(total, terms):
        """One device sync for all terms."""
        names = list(terms) + ["total"]
        values = torch.stack([terms[name].detach() for name in terms] + [total.detach()]).tolist()
        return dict(zip(names, values))

    def forward(self, video_label, out, pseudo_label=None):
        """video_label (B, C) multi-hot; out: ModelOutput; pseudo_label is ignored at step 0."""
        loss, terms = self.classification(video_label, out)
        return loss, self.as_floats(loss, terms)


class ASMLocLoss(ASMLocBaseLoss):
    """cls_loss + pseudo_instance_loss (switch: use_pseudo_instance_loss), where
    pseudo_instance_loss = -mean_{B,T} sum_c exp(-u) log(max(cas, 1e-7)) pil + beta * mean(u).
    u is the model's uncertainty (B, T, 1), or 0 when the model has none."""

    def __init__(self, lamb_fg=1.0, lamb_bg=0.5, lamb_abg=0.5, beta=0.2,
                 use_pseudo_instance_loss=True):
        super().__init__(lamb_fg, lamb_bg, lamb_abg)
        self.beta = beta
        self.use_pseudo_instance_loss = bool(use_pseudo_instance_loss)

    @classmethod
    def from_config(cls, args):
        return cls(args.lamb_fg, args.lamb_bg, args.lamb_abg, args.beta,
                   args.use_pseudo_instance_loss)

    def pseudo_instance(self, out, pseudo_label):
        """out.cas (B, T, C+1), pseudo_label (B, T, C+1) row-normalised."""
        u = out.uncertainty if out.uncertainty is not None \
            else out.cas.new_zeros(out.cas.shape[:2] + (1,))
        log_cas = torch.log(out.cas.clamp(min=EPS))                       # (B, T, C+1)
        weighted = torch.exp(-u) * log_cas * pseudo_label.to(out.cas.dtype)  # (B, T, C+1)
        return -weighted.sum(dim=2).mean() + self.beta * u.mean()

    def forward(self, video_label, out, pseudo_label=None):
        """video_label (B, C); out: ModelOutput; pseudo_label (B, T, C+1), required when the
        pseudo instance loss is on."""
        loss, terms = self.classification(video_label, out)
        if self.use_pseudo_instance_loss:
            if pseudo_label is None:
                raise ValueError("ASMLocLoss needs pseudo_label (B, T, C+1) when "
                                 "use_pseudo_instance_loss is on")
            pil = self.pseudo_instance(out, pseudo_label)
            terms["pseudo_instance_loss"] = pil
            loss = loss + pil
        return loss, self.as_floats(loss, terms)
