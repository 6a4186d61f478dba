"""Training pairs drawn from labelled texts, as SetFit does: same label similar, else not."""

from __future__ import annotations

import numpy as np

__all__ = ["label_pairs"]


def label_pairs(
    labels: np.ndarray, pairs_per_text: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of texts with target 1 (same label) or 0 (different labels).

    Every text is the first text of ``pairs_per_text`` pairs, half of them with
    another text of its label (when its label has another text) and the rest
    with texts of other labels, drawn at random with ``seed``.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        One label per text.
    pairs_per_text : int
        Pairs drawn per text.
    seed : int
        Seed of the draw.

    Returns
    -------
    first, second : ndarray of int
        Positions of the pairs' texts.
    targets : ndarray of float32
        1.0 for a pair of the same label, 0.0 otherwise.

    Raises
    ------
    ValueError
        If there is a single label, or no label has two texts.
    """
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"Fine-tuning on labelled texts needs at least 2 labels to tell apart; y has one "
            f"label ({classes[0]!r}) for all {len(labels)} texts."
        )
    if counts.max() < 2:
        raise ValueError(
            f"Fine-tuning on labelled texts needs a label with at least 2 texts to draw a "
            f"similar pair from; each of the {len(classes)} labels of y has a single text."
        )
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(codes == c) for c in range(len(classes))]
    first, second, targets = [], [], []
    for i, code in enumerate(codes):
        same = members[code][members[code] != i]
        other = np.flatnonzero(codes != code)
        n_same = pairs_per_text // 2 if len(same) else 0
        first += [i] * pairs_per_text
        second += [*rng.choice(same, n_same), *rng.choice(other, pairs_per_text - n_same)]
        targets += [1.0] * n_same + [0.0] * (pairs_per_text - n_same)
    return np.asarray(first), np.asarray(second), np.asarray(targets, dtype=np.float32)
