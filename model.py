"""ASM-Loc models (docs/method.md §3-5): the base model of step 0 and the full model of steps >= 1.

Shape legend: B batch, T snippets, D feature channels, C action classes (+1 background),
K proposals per video (zero padded), h heads, dh = D / h head channels, N snippets inside
at least one proposal (per video, padded to the batch maximum).

Parameter names and shapes are those of the released checkpoints (strict loading works).
The full model has two exact ways to compute segment attention:
- dense (`fast_attention = False`): every snippet goes through q/k/v/out and T x T masked
  attention, as the released code does;
- fast (default): only snippets inside some proposal are projected and attend to each other
  (others get zero attention output, so conv_out gives them just its bias), packed per video or
  per run of proposal-joined snippets, whichever is cheaper (`intra_packing`; given the
  `layout` engine/layout.py computes on the host, no host sync), and inter-segment attention
  runs over the valid proposals only. BatchNorm still sees all B x T snippets, so its batch
  statistics are unchanged; outputs and gradients equal the dense path up to rounding.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class ModelOutput(NamedTuple):
    fg_cls: torch.Tensor  # (B, C+1) softmaxed video scores, foreground branch
    bg_cls: torch.Tensor  # (B, C+1) softmaxed video scores, background branch
    temp_att: torch.Tensor  # (B, T, 2) softmax over (foreground, background)
    cas: torch.Tensor  # (B, T, C+1) softmax(cas_logits)
    fg_cas: torch.Tensor  # (B, T, C+1)
    bg_cas: torch.Tensor  # (B, T, C+1)
    uncertainty: Optional[torch.Tensor]  # (B, T, 1); None for the base model / use_uncertainty off


def conv1x1(x, conv, bias=True):
    """Apply a kernel-1 Conv1d to channels-last rows (..., D) as a matmul."""
    return F.linear(x, conv.weight[..., 0], conv.bias if bias else None)


def topk_mean(x, divisor, lengths=None):
    """Mean of the top max(T // divisor, 1) values along T, per class; x (B, T, C+1).

    lengths (B,) int64 on x's device: video b has only its first lengths[b] rows (the rest is
    padding of a batch of videos of different lengths): its own k = max(lengths[b] // divisor, 1)
    over its own rows. None: every video has all T rows."""
    B, T, _ = x.shape
    if lengths is None:
        k = max(T // divisor, 1)
        return x.topk(k, dim=1).values.mean(dim=1)                      # (B, C+1)
    k = torch.clamp(lengths // divisor, min=1)                          # (B,)
    rows = torch.arange(T, device=x.device)
    top = x.masked_fill((rows[None, :] >= lengths[:, None])[..., None], float("-inf"))
    top = top.topk(max(T // divisor, 1), dim=1).values                  # (B, k_T, C+1)
    top = top.masked_fill((rows[None, :top.shape[1]] >= k[:, None])[..., None], 0.0)
    return top.sum(dim=1) / k[:, None].to(x.dtype)                      # (B, C+1)


# ----------------------------------------------------------------------------- proposal masks
def proposal_membership(proposal_bbox, proposal_count, T):
    """P (B, T, K) bool: snippet t lies in valid proposal k (k < count, [start, end] inclusive).

    Also returns valid (B, K) bool. Broadcasting only, no loops.
    """
    K = proposal_bbox.shape[1]
    device = proposal_bbox.device
    t = torch.arange(T, device=device)[None, :, None]                   # (1, T, 1)
    start = proposal_bbox[..., 0][:, None, :]                           # (B, 1, K)
    end = proposal_bbox[..., 1][:, None, :]                             # (B, 1, K)
    valid = torch.arange(K, device=device)[None] < proposal_count.to(device)[:, None]  # (B, K)
    return (t >= start) & (t <= end) & valid[:, None, :], valid         # (B, T, K), (B, K)


def attention_masks(membership, valid):
    """Intra mask (B, T, T): both snippets in one proposal; inter mask (B, K, K): both valid."""
    p = membership.float()
    intra = (p @ p.transpose(1, 2)) > 0                                 # (B, T, T)
    inter = valid[:, :, None] & valid[:, None, :]                       # (B, K, K)
    return intra, inter


def segment_attention(q, k, v, mask, scale):
    """softmax(scale q k^T) v with mask (B, Nq, Nk) bool (True = may attend); fully masked
    rows give 0, with no NaN in the forward or the backward pass.

    q (B, h, Nq, dh), k/v (B, h, Nk, dh), all unscaled. Runs torch's fused
    scaled_dot_product_attention (flash / memory-efficient kernels where the device has them).
    Backends disagree on all-False rows (NaN on some, 0 on others), so an empty row attends to
    every key instead and its output is zeroed after: the zeroing also stops its gradient.
    No host sync. The dense loop version lives in the tests as the oracle.
    """
    empty = ~mask.any(dim=-1, keepdim=True)                             # (B, Nq, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=(mask | empty)[:, None], scale=scale)
    return out.masked_fill(empty[:, None], 0.0)                         # (B, h, Nq, dh)


# ----------------------------------------------------------------------------- attention blocks
class AttentionBlock(nn.Module):
    """y = x + BN(conv_out(attention)); BN weight/bias start at 0 so the block starts as
    identity."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.conv_query = nn.Conv1d(dim, dim, 1)
        self.conv_key = nn.Conv1d(dim, dim, 1)
        self.conv_value = nn.Conv1d(dim, dim, 1)
        self.conv_out = nn.Conv1d(dim, dim, 1)
        self.bn = nn.BatchNorm1d(dim)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def split_heads_cf(self, x):
        """Channels-first (B, D, N) -> (B, h, N, dh); channel c belongs to head c // dh."""
        B, _, N = x.shape
        return x.view(B, self.heads, self.head_dim, N).transpose(2, 3)  # (B, h, N, dh)

    def qkv_rows(self, rows):
        """Query, key, value (unscaled) of channels-last rows (B, N, D), each (B, h, N, dh).

        Each is a (B, N, h, dh) tensor viewed as heads, not copied: scaled_dot_product_attention
        keeps that memory layout for its output and gradients on the CPU, so neither the forward
        nor the backward pass makes a transposed copy (a fused 3D-wide projection would need a
        stack and a permuted copy of all three gradients)."""
        B, N, _ = rows.shape
        # 3 x (B, h, N, dh)
        return tuple(conv1x1(rows, conv).view(B, N, self.heads, self.head_dim).transpose(1, 2)
                     for conv in (self.conv_query, self.conv_key, self.conv_value))

    def dense_attend(self, x, mask):
        """Released-style attention over all N positions of channels-first x (B, D, N)."""
        B, D, N = x.shape
        q = self.split_heads_cf(self.conv_query(x))                     # (B, h, N, dh)
        k = self.split_heads_cf(self.conv_key(x))
        v = self.split_heads_cf(self.conv_value(x))
        out = segment_attention(q, k, v, mask, self.scale)              # (B, h, N, dh)
        return out.transpose(2, 3).reshape(B, D, N)                     # (B, D, N)


class IntraSegmentAttention(AttentionBlock):
    """Snippets attend to the snippets sharing a proposal with them."""

    packing = "auto"            # intra_packing of the fast path: "auto", "video" or "run"

    def forward_dense(self, x, intra_mask):
        """x (B, T, D), intra_mask (B, T, T) -> (B, T, D); all snippets through every projection."""
        xc = x.transpose(1, 2)                                          # (B, D, T)
        y = xc + self.bn(self.conv_out(self.dense_attend(xc, intra_mask)))
        return y.transpose(1, 2)                                        # (B, T, D)

    def forward_fast(self, x, membership, layout=None):
        """Same result, projecting the covered snippets only and attending among them in the
        packing of `intra_packing` (per video, or per run of snippets that proposals join);
        `layout` (engine/layout.py, on x's device) gives that packing without a host sync."""
        B, T, D = x.shape
        K = membership.shape[2]
        rows = x.reshape(B * T, D)                                      # (B*T, D)
        if layout is not None:
            sel, slot, groups = layout.sel, layout.slot, layout.groups
        else:
            covered = membership.any(dim=2)                             # (B, T)
            sel = covered.reshape(-1).nonzero().squeeze(1)              # (n,) covered row indices
            slot, groups = intra_packing(membership, covered, sel, self.packing)
        covered_rows = rows.index_select(0, sel)                        # (n, D)
        total = groups[-1][0] + groups[-1][1] * groups[-1][2]           # slots in the packed buffer

        def packed(values):                                        # (n, F) -> (slots, F), padding 0
            return values.new_zeros(total, values.shape[1]).index_copy(0, slot, values)
        q, k, v = (packed(conv1x1(covered_rows, conv)) for conv in
                   (self.conv_query, self.conv_key, self.conv_value))   # 3 x (slots, D)
        member = packed(membership.reshape(B * T, K).index_select(0, sel).to(q.dtype))  # (slots, K)
        outputs = []
        for offset, count, length in groups:                          # one attention call per group
            part = slice(offset, offset + count * length)
            heads = [t[part].view(count, length, self.heads, self.head_dim).transpose(1, 2)
                     for t in (q, k, v)]                                # 3 x (count, h, length, dh)
            m = member[part].view(count, length, K)
            mask = (m @ m.transpose(1, 2)) > 0                          # (count, length, length)
            att = segment_attention(*heads, mask, self.scale)           # (count, h, length, dh)
            outputs.append(att.transpose(1, 2).reshape(count * length, D))
        att = outputs[0] if len(outputs) == 1 else torch.cat(outputs)   # (slots, D)
        att = conv1x1(att.index_select(0, slot), self.conv_out, bias=False)  # (n, D)
        # (B*T, D); dtype of att (autocast)
        out_rows = att.new_zeros(B * T, D).index_copy(0, sel, att)
        out_rows = out_rows + self.conv_out.bias                        # conv_out(0) = bias outside
        return (rows + self.bn(out_rows)).view(B, T, D)                 # (B, T, D)


def intra_packing(membership, covered, sel, packing="auto"):
    """Where each covered snippet goes for intra-segment attention: slot (n,) into a packed
    buffer, and groups [(first slot, rows, row length)], each one attention call over
    (rows, row length) padded with empty slots.

    Two snippets can only attend to each other if a proposal joins them, directly or through a
    chain of overlapping proposals: the covered snippets split into runs (maximal intervals in
    which neighbours share a proposal) that never attend across. "video" packs each video's
    covered snippets into one row (B rows of the largest count N, cost B N^2); "run" gives every
    run a row of its own, grouped by length class (lengths in (2^(j-1), 2^j] share a group padded
    to the group's longest), cost sum rows x length^2. "auto" takes the cheaper by that cost;
    runs win when proposals are short and scattered (real THUMOS videos), videos win when one
    proposal spans most of each video. Both give the same attention up to rounding.
    """
    B, T, K = membership.shape
    device = sel.device
    n = sel.numel()                                    # 0: one empty group (no NaN, zero gradients)
    n_max = int(covered.sum(dim=1).max())                               # N
    video_cost = B * n_max ** 2
    if packing != "video" and n:
        # (B, T-1) t-1 and t share a proposal
        joined = (membership[:, 1:] & membership[:, :-1]).any(dim=2)
        starts = covered.clone()
        starts[:, 1:] &= ~joined                                     # (B, T) first snippet of a run
        # (n,) run of each covered snippet
        run = starts.reshape(-1).cumsum(0).index_select(0, sel) - 1
        lengths = torch.bincount(run)                                   # (R,)
        # (n,) inside its run
        position = torch.arange(n, device=device) - (lengths.cumsum(0) - lengths)[run]
        length_class = torch.ceil(torch.log2(lengths.double())).long()  # (R,) 0 for length 1
        classes = torch.unique(length_class).tolist()
        by_class = [(length_class == j).nonzero().squeeze(1) for j in classes]
        longest = [int(lengths[ids].max()) for ids in by_class]
        run_cost = sum(len(ids) * length ** 2 for ids, length in zip(by_class, longest))
        if packing == "run" or (packing == "auto" and run_cost < video_cost):
            row_of_run = torch.empty_like(lengths)               # (R,) first slot of each run's row
            groups, offset = [], 0
            for ids, length in zip(by_class, longest):
                row_of_run[ids] = offset + torch.arange(len(ids), device=device) * length
                groups.append((offset, len(ids), length))
                offset += len(ids) * length
            return row_of_run[run] + position, groups
    # (n,) position in its video
    rank = (covered.cumsum(dim=1) - 1).reshape(-1).index_select(0, sel)
    return (sel // T) * n_max + rank, [(0, B, n_max)]


class InterSegmentAttention(AttentionBlock):
    """Proposals (mean snippet features) attend to each other; results spread back to snippets."""

    @staticmethod
    def pooling(membership, dtype):
        """Column-normalised P (mean over a proposal's snippets), row-normalised P (mean over
        the proposals covering a snippet; 0 where none). Both (B, T, K)."""
        p = membership.to(dtype)
        return (p / p.sum(dim=1, keepdim=True).clamp(min=1e-5),
                p / p.sum(dim=2, keepdim=True).clamp(min=1e-5))

    def forward_dense(self, x, membership, inter_mask):
        """x (B, T, D), membership (B, T, K), inter_mask (B, K, K) -> (B, T, D)."""
        xc = x.transpose(1, 2)                                          # (B, D, T)
        col, row = self.pooling(membership, x.dtype)
        segments = xc @ col                                             # (B, D, K)
        att = self.dense_attend(segments, inter_mask)                   # (B, D, K)
        spread = att @ row.transpose(1, 2)                              # (B, D, T)
        return (xc + self.bn(self.conv_out(spread))).transpose(1, 2)    # (B, T, D)

    def forward_fast(self, x, membership, valid, k_max=None):
        """Same result over the first k_max = max(count) proposals (given, or read from `valid`
        with a host sync), with conv_out applied per proposal before spreading (linear, so it
        commutes with the spread; its bias is added after)."""
        B, T, D = x.shape
        if k_max is None:                                               # K'; 0: empty tensors
            k_max = int(valid.sum(dim=1).max()) if valid.numel() else 0
        col, row = self.pooling(membership[:, :, :k_max], x.dtype)      # (B, T, K')
        segments = col.transpose(1, 2) @ x                              # (B, K', D)
        q, k, v = self.qkv_rows(segments)                               # 3 x (B, h, K', dh)
        mask = valid[:, :k_max, None] & valid[:, None, :k_max]          # (B, K', K')
        # (B, K', D)
        att = segment_attention(q, k, v, mask, self.scale).transpose(1, 2).reshape(B, k_max, D)
        out = row @ conv1x1(att, self.conv_out, bias=False)             # (B, T, D)
        out = (out + self.conv_out.bias).reshape(B * T, D)              # (B*T, D)
        return x + self.bn(out).view(B, T, D)                           # (B, T, D)


# ----------------------------------------------------------------------------- models
def base_settings(args):
    """The base model's keyword arguments from a config namespace."""
    return dict(feature_dim=args.feature_dim, num_classes=args.action_cls_num, dropout=args.dropout,
                fg_topk_seg=args.fg_topk_seg, bg_topk_seg=args.bg_topk_seg,
                embed_dropout=bool(args.embed_dropout))


class ASMLocBase(nn.Module):
    """Step-0 model: embedding, foreground/background attention, snippet classifier.

    embed_dropout (ActivityNet preset) adds Dropout before the embedding conv (so the conv is
    feature_embedding.1) and dropout before the attention and uncertainty heads.
    """

    def __init__(self, feature_dim, num_classes, dropout=0.7, fg_topk_seg=8, bg_topk_seg=3,
                 embed_dropout=False):
        super().__init__()
        D, C = feature_dim, num_classes
        self.embed_dropout = bool(embed_dropout)
        self.fg_topk_seg, self.bg_topk_seg = fg_topk_seg, bg_topk_seg
        self.dropout = nn.Dropout(dropout)
        layers = [nn.Dropout(dropout)] if self.embed_dropout else []
        self.feature_embedding = nn.Sequential(*layers, nn.Conv1d(D, D, 3, padding=1), nn.ReLU())
        self.att_branch = nn.Conv1d(D, 2, 1)
        self.snippet_cls = nn.Linear(D, C + 1)
        self.uncertainty_branch = None

    @classmethod
    def from_config(cls, args):
        """The model of a config namespace (docs/method.md §2 keys)."""
        return cls(**base_settings(args))

    def embed(self, features):
        """features (B, T, D) -> embedding (B, T, D), contiguous channels-last."""
        return self.feature_embedding(features.transpose(1, 2)).transpose(1, 2).contiguous()

    def head_input(self, emb):
        return self.dropout(emb) if self.embed_dropout else emb

    def heads(self, emb, lengths=None):
        """Attention, snippet dropout, classifier, top-k pooling (docs/method.md §3-5) ->
        ModelOutput. lengths: see topk_mean (rows past a video's length are padding)."""
        emb = emb.contiguous()  # dropout masks follow memory order: same layout on every path
        B, T, _ = emb.shape
        temp_att = torch.softmax(conv1x1(self.head_input(emb), self.att_branch), dim=2)  # (B, T, 2)
        select = self.dropout(emb.new_ones(B, T, 1))                    # (B, T, 1) whole snippets
        cas_logits = self.snippet_cls(self.dropout(emb * select))       # (B, T, C+1)
        fg = cas_logits * temp_att[:, :, 0:1]                           # (B, T, C+1)
        bg = cas_logits * temp_att[:, :, 1:2]
        fg_cls = torch.softmax(topk_mean(fg, self.fg_topk_seg, lengths), dim=1)  # (B, C+1)
        bg_cls = torch.softmax(topk_mean(bg, self.bg_topk_seg, lengths), dim=1)
        uncertainty = None
        if self.uncertainty_branch is not None:
            uncertainty = conv1x1(self.head_input(emb), self.uncertainty_branch)  # (B, T, 1)
        return ModelOutput(fg_cls, bg_cls, temp_att, torch.softmax(cas_logits, dim=2),
                           torch.softmax(fg, dim=2), torch.softmax(bg, dim=2), uncertainty)

    def forward(self, features, proposal_bbox=None, proposal_count=None, lengths=None,
                layout=None):
        """features (B, T, D); proposals (and their layout) are ignored by the base model.
        lengths (B,) int64: rows past a video's length are zero padding (batched evaluation):
        the embedding convolution's own zero padding sees the same zeros, every other layer
        works per row, and top-k pooling takes each video's own rows (topk_mean)."""
        return self.heads(self.embed(features), lengths)


class ASMLoc(ASMLocBase):
    """Full model: intra- and inter-segment attention between embedding and heads, plus the
    uncertainty head. Switches use_intra_attention / use_inter_attention / use_uncertainty
    drop the corresponding modules (and their state_dict keys); all on = the paper's model.
    With use_uncertainty off the output's uncertainty is None (the loss then uses u = 0)."""

    def __init__(self, feature_dim, num_classes, dropout=0.7, fg_topk_seg=8, bg_topk_seg=3,
                 embed_dropout=False, num_heads=8, use_intra_attention=True,
                 use_inter_attention=True, use_uncertainty=True):
        super().__init__(feature_dim, num_classes, dropout, fg_topk_seg, bg_topk_seg,
                         embed_dropout)
        D = feature_dim
        self.fast_attention = True
        self.MHSA_Intra = IntraSegmentAttention(D, num_heads) if use_intra_attention else None
        self.MHSA_Inter = InterSegmentAttention(D, num_heads) if use_inter_attention else None
        if use_uncertainty:
            self.uncertainty_branch = nn.Conv1d(D, 1, 1, bias=False)
            nn.init.normal_(self.uncertainty_branch.weight, 0.0, 1e-4)

    @classmethod
    def from_config(cls, args):
        return cls(**base_settings(args), num_heads=args.num_heads,
                   use_intra_attention=args.use_intra_attention,
                   use_inter_attention=args.use_inter_attention,
                   use_uncertainty=args.use_uncertainty)

    def forward(self, features, proposal_bbox=None, proposal_count=None, lengths=None,
                layout=None):
        """features (B, T, D), proposal_bbox (B, K, 2) long, proposal_count (B,) long.
        Missing proposals mean an empty proposal set (the attention blocks then add only
        BN(bias) terms). lengths: see ASMLocBase.forward (a proposal never reaches a video's
        padding: its end is at most the video's last row). layout: engine/layout.py's layout
        of the same proposals, on the device (no host sync), or None."""
        B, T, _ = features.shape
        if proposal_bbox is None:
            proposal_bbox = torch.zeros(B, 1, 2, dtype=torch.long, device=features.device)
            proposal_count = torch.zeros(B, dtype=torch.long, device=features.device)
        membership, valid = proposal_membership(proposal_bbox, proposal_count, T)
        if self.fast_attention:
            emb = self.embed(features)                                  # (B, T, D)
            if self.MHSA_Intra is not None:
                emb = self.MHSA_Intra.forward_fast(emb, membership, layout)
            if self.MHSA_Inter is not None:
                emb = self.MHSA_Inter.forward_fast(emb, membership, valid,
                                                   None if layout is None else layout.k_max)
            return self.heads(emb, lengths)
        intra, inter = attention_masks(membership, valid)
        return self.forward_masks(features, membership, intra, inter, lengths)

    def forward_masks(self, features, membership, intra_mask, inter_mask, lengths=None):
        """Dense released-style forward from explicit masks (the oracle for the fast path):
        membership P (B, T, K), intra_mask (B, T, T), inter_mask (B, K, K)."""
        emb = self.embed(features)                                      # (B, T, D)
        if self.MHSA_Intra is not None:
            emb = self.MHSA_Intra.forward_dense(emb, intra_mask)
        if self.MHSA_Inter is not None:
            emb = self.MHSA_Inter.forward_dense(emb, membership, inter_mask)
        return self.heads(emb, lengths)

