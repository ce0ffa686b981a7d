"""Slow versions of model.py's masks, intra-segment packing and segment attention, written from
docs/method.md §4-5 with plain loops (and the model's former dense masked attention)."""
import torch


def loop_masks(bbox, count, T):
    """Reference masks written from docs/method.md §4-5 with plain loops: membership (B, T, K),
    intra (B, T, T), inter (B, K, K)."""
    B, K, _ = bbox.shape
    member = torch.zeros(B, T, K, dtype=torch.bool)
    intra = torch.zeros(B, T, T, dtype=torch.bool)
    inter = torch.zeros(B, K, K, dtype=torch.bool)
    for b in range(B):
        for k in range(int(count[b])):
            s, e = int(bbox[b, k, 0]), int(bbox[b, k, 1])
            for t in range(s, e + 1):
                member[b, t, k] = True
                for u in range(s, e + 1):
                    intra[b, t, u] = True
        inter[b, :int(count[b]), :int(count[b])] = True
    return member, intra, inter


def loop_runs(bbox, count, T):
    """Runs of covered snippets written from their definition with loops: t-1 and t are in one run
    when some proposal contains both. Returns [(video, [snippets])] in (video, time) order."""
    runs = []
    for b in range(bbox.shape[0]):
        spans = [(int(bbox[b, k, 0]), int(bbox[b, k, 1])) for k in range(int(count[b]))]
        current = []
        for t in range(T):
            inside = any(s <= t <= e for s, e in spans)
            joined = bool(current) and any(s <= t - 1 and t <= e for s, e in spans)
            if current and not (inside and joined):
                runs.append((b, current))
                current = []
            if inside:
                current.append(t)
        if current:
            runs.append((b, current))
    return runs


def masked_attention(q, k, v, mask, scale):
    """Oracle (the model's former hand-written attention): dense masked softmax, empty rows 0."""
    empty = ~mask.any(dim=-1, keepdim=True)                             # (B, Nq, 1)
    logits = (q * scale) @ k.transpose(-1, -2)                          # (B, h, Nq, Nk)
    logits = logits.masked_fill(~(mask | empty)[:, None], float("-inf"))
    attn = torch.softmax(logits, dim=-1).masked_fill(empty[:, None], 0.0)
    return attn @ v                                                     # (B, h, Nq, dh)


def loop_attention(q, k, v, mask, scale):
    """Oracle from the definition, one query row at a time: softmax over the allowed keys only."""
    B, h, Nq, dh = q.shape
    rows = []
    for b in range(B):
        for head in range(h):
            for i in range(Nq):
                keys = mask[b, i].nonzero().squeeze(1)
                if len(keys) == 0:
                    rows.append(q.new_zeros(dh))
                    continue
                weights = torch.softmax(scale * (k[b, head, keys] @ q[b, head, i]), dim=0)  # (n,)
                rows.append(weights @ v[b, head, keys])                 # (dh,)
    return torch.stack(rows).view(B, h, Nq, dh)
