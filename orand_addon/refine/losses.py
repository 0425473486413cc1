"""IRN's training targets and losses (``step/train_irn.py``), as pure tensor functions.

Pairs come from the stride-4 seed label of a crop (radius 10, :mod:`.paths` windows over the unpadded map):

* background-positive: both ends background (0); foreground-positive: both ends the same class (1..C);
* negative: both ends labelled (not 255) with different labels; pairs touching 255 are ignored.

Losses (each a mean over its pairs, ``+1e-5`` in the denominators as IRN):
``pos = (−log(aff + 1e-5) over bg-pos)/2 + (same over fg-pos)/2``, ``neg = −log(1 + 1e-5 − aff)`` over negatives,
``dp_fg = |disp − (dy, dx)|`` over fg-pos (summed over both components, halved), ``dp_bg = |disp|`` over bg-pos;
total ``(pos + neg)/2 + (dp_fg + dp_bg)/2``. ``aff`` is ``1 − max boundary on the path``; ``disp`` is the
displacement at the source minus the one at the destination.

The losses are means over the pairs of the *whole batch*, so a batch split over several processes (DDP) is not the
mean of the per-process losses. Given the pair counts of the whole batch (:func:`pair_counts`, summed over the
ranks), :func:`irn_losses` of one rank's part is that part's share of the whole batch's losses: the shares add up
to the losses of one process on the whole batch, and so do their gradients.

>>> import torch
>>> from .paths import path_table
>>> label = torch.zeros(1, 3, 4, dtype=torch.int64); label[0, :, 2:] = 5; label[0, 2, 0] = 255
>>> bg, fg, neg = pair_labels(label, path_table(2))
>>> int(bg.sum()), int(fg.sum()), int(neg.sum())
(3, 6, 6)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .paths import PathTable, path_max

IGNORE = 255


def _windows(x: torch.Tensor, table: PathTable) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, U, m) windows of the training sources."""
    b, c, h, w = x.shape
    kh, kw = table.window_shape
    return F.unfold(x, table.window_shape).view(b, c, kh * kw, (h - kh + 1) * (w - kw + 1))


def pair_labels(label: torch.Tensor, table: PathTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, h, w) int labels (0, 1..C, 255) -> float (B, D, m) masks: bg-positive, fg-positive, negative."""
    windows = _windows(label[:, None].float(), table)[:, 0]
    src = windows[:, table.source_row][:, None]
    dst = windows[:, torch.as_tensor(table.dest_rows, device=label.device)]
    valid = (src != IGNORE) & (dst != IGNORE)
    equal = src == dst
    bg_pos = equal & valid & (src == 0)
    fg_pos = equal & valid & (src > 0)
    neg = ~equal & valid
    return bg_pos.float(), fg_pos.float(), neg.float()


def edge_affinity(edge_prob: torch.Tensor, table: PathTable) -> torch.Tensor:
    """Boundary probabilities (B, 1, h, w) -> affinities ``1 − max on the path`` (B, D, m), differentiable."""
    return 1.0 - path_max(_windows(edge_prob, table)[:, 0], table)


def pair_displacement(dp: torch.Tensor, table: PathTable) -> torch.Tensor:
    """Displacement field (B, 2, h, w) -> source minus destination (B, 2, D, m)."""
    windows = _windows(dp, table)
    src = windows[:, :, table.source_row][:, :, None]
    dst = windows[:, :, torch.as_tensor(table.dest_rows, device=dp.device)]
    return src - dst


def pair_counts(bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The numbers of bg-positive, fg-positive and negative pairs, float32 (3,).

    >>> pair_counts(torch.ones(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2, 2, 3)).tolist()
    [6.0, 0.0, 12.0]
    """
    return torch.stack([bg_pos.sum(), fg_pos.sum(), neg.sum()]).float()


def irn_losses(aff: torch.Tensor, disp: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor,
               neg: torch.Tensor, table: PathTable, counts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """IRN's four losses and their total (all float32 scalars).

    ``counts``: the pair counts of the whole batch when these pairs are only a part of it (:func:`pair_counts`
    summed over the parts); the result is then this part's share of the whole batch's losses. Default: the
    counts of these pairs (the batch is all here).

    >>> from .paths import path_table
    >>> t = path_table(2); ones = torch.ones(1, 4, 2)
    >>> out = irn_losses(ones, torch.zeros(1, 2, 4, 2), ones, 0 * ones, 0 * ones, t)
    >>> [round(float(out[k]), 4) for k in ("pos", "neg", "dp_fg", "dp_bg")]
    [-0.0, 0.0, 0.0, 0.0]
    """
    aff, disp = aff.float(), disp.float()
    eps = 1e-5
    n_bg, n_fg, n_neg = pair_counts(bg_pos, fg_pos, neg) if counts is None else counts.to(aff.device, torch.float32)
    bg_loss = torch.sum(-bg_pos * torch.log(aff + eps)) / (n_bg + eps)
    fg_loss = torch.sum(-fg_pos * torch.log(aff + eps)) / (n_fg + eps)
    pos = bg_loss / 2 + fg_loss / 2
    neg_loss = torch.sum(-neg * torch.log(1.0 + eps - aff)) / (n_neg + eps)
    target = torch.as_tensor(table.directions, dtype=disp.dtype, device=disp.device).t()[None, :, :, None]
    dp_fg = torch.sum((disp - target).abs() * fg_pos[:, None]) / (2 * n_fg + eps)
    dp_bg = torch.sum(disp.abs() * bg_pos[:, None]) / (2 * n_bg + eps)
    total = (pos + neg_loss) / 2 + (dp_fg + dp_bg) / 2
    return {"pos": pos, "neg": neg_loss, "dp_fg": dp_fg, "dp_bg": dp_bg, "total": total}
