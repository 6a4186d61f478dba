"""Losses for pairs of sentence embeddings with a target per pair.

The definitions are those of the reference library's losses of the same names
(``CoSENTLoss``, ``CosineSimilarityLoss``, ``ContrastiveLoss`` with the cosine
distance), written here over two batches of embeddings and their targets.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LOSSES", "check_targets", "pair_loss"]

#: Loss name -> what its targets must be, for error messages.
LOSSES = {
    "cosent": "any real scores (only their order within a batch matters)",
    "cosine": "scores in [-1, 1], the range of the cosine the loss fits them with",
    "contrastive": "labels 0 (dissimilar) or 1 (similar)",
}

# CoSENT multiplies cosines by this before comparing them (the reference's default scale).
COSENT_SCALE = 20.0
# The contrastive loss pushes dissimilar pairs at least this far apart (cosine distance).
CONTRASTIVE_MARGIN = 0.5


def check_targets(loss: str, targets: np.ndarray) -> None:
    """Refuse targets a loss cannot learn from, saying what was given and what it needs.

    Raises
    ------
    ValueError
        If a target is not finite, or outside the loss's range.
    """
    given = f"got values in [{targets.min():g}, {targets.max():g}]"
    if not np.isfinite(targets).all():
        raise ValueError(f"y holds {int((~np.isfinite(targets)).sum())} non-finite values.")
    if loss == "cosine" and (targets.min() < -1 or targets.max() > 1):
        raise ValueError(
            f"loss='cosine' needs {LOSSES['cosine']}; {given}. Rescale the scores (for STSb's "
            "0-5 scale, y / 5), or use loss='cosent', which takes any scale."
        )
    if loss == "contrastive" and not np.isin(targets, (0.0, 1.0)).all():
        raise ValueError(
            f"loss='contrastive' needs {LOSSES['contrastive']}; {given}. Use loss='cosent' or "
            "loss='cosine' for graded scores."
        )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-by-row cosine similarity, float32 whatever the embeddings' precision."""
    a = torch.nn.functional.normalize(a.float(), p=2.0, dim=1)
    b = torch.nn.functional.normalize(b.float(), p=2.0, dim=1)
    return (a * b).sum(dim=1)


def _cosent(cosine: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # log(1 + sum over pairs (i, j) with target_i < target_j of exp(s_i - s_j)): every pair
    # ranked above another by its target should have the higher scaled cosine.
    scores = cosine * COSENT_SCALE
    differences = scores[:, None] - scores[None, :]
    ordered = targets[:, None] < targets[None, :]
    differences = differences.masked_fill(~ordered, float("-inf"))
    return torch.logsumexp(torch.cat([scores.new_zeros(1), differences.flatten()]), dim=0)


def _contrastive(cosine: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    distance = 1.0 - cosine
    pulled = targets * distance.pow(2)
    pushed = (1.0 - targets) * torch.relu(CONTRASTIVE_MARGIN - distance).pow(2)
    return (0.5 * (pulled + pushed)).mean()


def pair_loss(loss: str, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of one batch of pairs.

    Parameters
    ----------
    loss : {"cosent", "cosine", "contrastive"}
    a, b : Tensor of shape (n, d)
        Embeddings of the pairs' first and second texts.
    targets : Tensor of shape (n,), float32
        A score (``"cosent"``, ``"cosine"``) or a 0/1 label (``"contrastive"``) per pair.

    Returns
    -------
    Tensor
        A scalar.
    """
    cosine = _cosine(a, b)
    if loss == "cosent":
        return _cosent(cosine, targets)
    if loss == "cosine":
        return torch.nn.functional.mse_loss(cosine, targets)
    if loss == "contrastive":
        return _contrastive(cosine, targets)
    raise ValueError(f"Unknown loss {loss!r}; expected one of {sorted(LOSSES)}.")
