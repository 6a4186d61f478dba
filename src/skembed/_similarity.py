"""Similarity functions between embeddings, with no knowledge of models.

The formulas are those of sentence-transformers' ``util`` module: cosine is the
product of L2-normalised rows (a zero row scores 0), dot is the plain product,
euclidean and manhattan are *negative* L2 and L1 distances, so that for every
metric a larger value means "more similar".

Every public function follows the same rules, enforced by one input check
(:func:`_check_pair`) and one table of metrics (``_METRICS``):

- input kinds: numpy arrays and array-likes, torch tensors, scipy sparse
  matrices (``similarity`` only; ``paired_similarity`` densifies them); a 1-D
  input is one embedding. If any input is a torch tensor the result is a torch
  tensor on that tensor's device (the first one's if both are), otherwise numpy.
- dtypes: float32 in gives float32 out, float64 gives float64; float16 and
  bfloat16 are computed as float32, integers and booleans as float64.
- refused with a ``ValueError`` naming the argument: non-numeric or complex
  values, NaN or infinity, zero-dimensional or 3-D inputs, embeddings of
  dimension 0, and embeddings whose dimensions differ.
- range: for float32 inputs the result is finite, and equal to the float64
  result rounded to float32 (up to float32 rounding), wherever that rounded
  result is finite, whatever the magnitude of the values; where the true
  result is beyond float32 (a dot product of two 1e30 vectors) it is ``inf``.
  float64 inputs are computed in float64, with float64's range.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._similarity_function import SimilarityFunction

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "SimilarityFunction",
    "paired_similarity",
    "semantic_search",
    "similarity",
]

# The one memory budget of this module: scores whose computation needs temporaries are
# computed in blocks of at most this many bytes (``max_block_bytes`` of similarity and
# semantic_search), so that the peak memory of a large similarity matrix stays close to the
# size of the matrix itself.
DEFAULT_BLOCK_BYTES = 64 << 20

# Euclidean distances come from ||x||^2 + ||y||^2 - 2 x.y, whose rounding error is a
# fraction (about 1e-7 in float32) of ||x||^2 + ||y||^2. Where the squared distance is
# under this fraction of that sum the error would be a large part of it, so such
# pairs are recomputed from their difference: every distance is then exact to about
# 1e-6 relative, whatever the row count or block shape that produced it.
_CLOSE_FRACTION = 0.25
# Pairs of rows whose squared norms are both below this are recomputed too, since
# squares of such values lose their precision in float32 (subnormal numbers).
_TINY_SQUARES = 2.0**-100

# Row norms outside [2**-50, 2**50] are recomputed from rows scaled to a maximum
# absolute value of 1, as are zero rows: their squares can underflow or overflow.
_NORM_RANGE = (2.0**-50, 2.0**50)
# The least norm cosine divides by, as the reference's (torch's) normalize: a row of smaller
# norm is divided by this instead.
_NORMALIZE_EPS = 1e-12

# Manhattan tiles: rows of y per tile, and a bound on the tile's (x rows, y rows, d)
# differences that keeps them in a core's cache.
_L1_Y_ROWS = 32
_L1_TILE_BYTES = 8 << 20

# Largest magnitude that float32 sums of products may reach before the result is
# computed in float64 instead (float32 overflows at 2**128).
_FLOAT32_SAFE = 2.0**120


Metric = str | SimilarityFunction | Callable[[np.ndarray, np.ndarray], float]


def similarity(
    X: Any, Y: Any = None, metric: Metric = "cosine", *, max_block_bytes: int | None = None
) -> Any:
    """Compute the similarity between every row of ``X`` and every row of ``Y``.

    The counterpart of :func:`sklearn.metrics.pairwise_kernels` for the
    sentence-transformers similarity functions.

    Parameters
    ----------
    X : array-like, torch.Tensor or scipy sparse matrix of shape (n_x, d) or (d,)
        Embeddings. A 1-D input is one embedding.
    Y : same kinds as X, of shape (n_y, d) or (d,), default=None
        Embeddings to compare with. ``None`` compares ``X`` with itself.
    metric : str, SimilarityFunction or callable, default="cosine"
        ``"cosine"``, ``"dot"``, ``"euclidean"`` or ``"manhattan"``, or a
        callable ``f(x_row, y_row) -> float`` evaluated on each pair of numpy
        rows (as in scikit-learn).
    max_block_bytes : int, default=None
        Bound on the scores computed at once, where computing them needs
        temporaries (euclidean, float64 dot): an output within it is
        computed in one go, a larger one in row blocks of at most this size,
        so the peak memory stays close to the size of the output. Cosine,
        manhattan and float32 dot write their scores straight into the output
        and are never blocked. ``None`` means ``DEFAULT_BLOCK_BYTES`` (64 MiB).

    Returns
    -------
    ndarray or torch.Tensor of shape (n_x, n_y)
        A torch tensor whenever ``X`` or ``Y`` is one (on the device of ``X``
        if it is a tensor, else of ``Y``), including with a sparse partner or a
        callable metric; otherwise a numpy array. float32 input gives float32
        output, float64 gives float64. Inputs are treated as data: no gradient
        flows through the result. For float32 inputs the result is finite
        wherever the exact result rounded to float32 is, whatever the
        magnitude of the values. An empty ``X`` or ``Y`` gives an empty result.

    Raises
    ------
    ValueError
        If the metric is unknown; an input is not numeric, holds NaN or
        infinity, is 0-D or has more than 2 dimensions; the embeddings have
        no values; or their dimensions differ.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import similarity
    >>> similarity(np.array([[1.0, 0.0], [1.0, 1.0]]), metric="cosine").round(4)
    array([[1.    , 0.7071],
           [0.7071, 1.    ]])
    """
    ops = _metric_ops(metric)
    budget = _block_bytes(max_block_bytes)
    pair = _check_pair(X, Y, ("X", "Y"), sparse="keep")
    n_x, n_y = pair.x.shape[0], pair.y.shape[0]
    if n_x == 0 or n_y == 0:
        return pair.wrap(torch.empty((n_x, n_y), dtype=pair.dtype))
    if ops is None:
        x, y = _numpy_rows(pair.x), _numpy_rows(pair.y)
        scores = [[metric(a, b) for b in y] for a in x]  # type: ignore[operator]
        return pair.wrap(np.array(scores, dtype=_numpy_dtype(pair.dtype)))
    if pair.sparse:
        scores = ops.sparse(_float64(pair.x), _float64(pair.y))
        # Scores beyond float32 become inf, as they should: no warning for that.
        with np.errstate(over="ignore"):
            return pair.wrap(scores.astype(_numpy_dtype(pair.dtype), copy=False))
    x, y = _prepare(ops, pair, pair.x, pair.y)
    if x.dtype == pair.dtype and x.dtype in ops.in_place_for:
        rows = n_x
    else:
        rows = max(1, budget // (n_y * pair.dtype.itemsize))
    with torch.no_grad():
        if rows >= n_x:
            # One block: the kernel makes the output itself (a matrix product into a given
            # output ran slower than one that allocates its own, at 1,000 rows).
            return pair.wrap(_matrix_kernel(x, y, ops.name, None).to(pair.dtype))
        out = torch.empty((n_x, n_y), dtype=pair.dtype, device=x.device)
        for start in range(0, n_x, rows):
            _matrix_kernel(x[start : start + rows], y, ops.name, out[start : start + rows])
    return pair.wrap(out)


def paired_similarity(X: Any, Y: Any, metric: Metric = "cosine") -> Any:
    """Compute the similarity of each row of ``X`` with the same row of ``Y``.

    Parameters
    ----------
    X : array-like, torch.Tensor or scipy sparse matrix of shape (n, d) or (d,)
        Embeddings. Sparse input is densified.
    Y : same kinds as X, of shape (n, d) or (d,)
        Embeddings, one per row of ``X``.
    metric : str, SimilarityFunction or callable, default="cosine"
        As in :func:`similarity`.

    Returns
    -------
    ndarray or torch.Tensor of shape (n,)
        ``out[i] = similarity(X[i], Y[i])``. Two 1-D inputs give a 0-d result,
        as in the reference library. Types, dtypes and range as in
        :func:`similarity`.

    Raises
    ------
    ValueError
        As :func:`similarity`, and if ``X`` and ``Y`` have different numbers
        of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import paired_similarity
    >>> paired_similarity(np.eye(2), np.ones((2, 2)), metric="dot")
    array([1., 1.])
    """
    ops = _metric_ops(metric)
    pair = _check_pair(X, Y, ("X", "Y"), sparse="densify")
    if pair.x.shape[0] != pair.y.shape[0]:
        raise ValueError(
            "paired_similarity compares row i of X with row i of Y, so both need the same "
            f"number of rows; got {pair.x.shape[0]} and {pair.y.shape[0]}."
        )
    if ops is None:
        x, y = _numpy_rows(pair.x), _numpy_rows(pair.y)
        scores = [metric(a, b) for a, b in zip(x, y, strict=True)]  # type: ignore[operator]
        out: Any = np.array(scores, dtype=_numpy_dtype(pair.dtype)).reshape(len(x))
    else:
        x, y = _prepare(ops, pair, pair.x, pair.y)
        with torch.no_grad():
            out = ops.rowwise(x, y).to(pair.dtype)
    if pair.one_d == (True, True):
        out = out[0]
    return pair.wrap(out)


def checked_top_k(top_k: Any, n_corpus: int) -> int:
    """``top_k`` as an int, refused unless it is between 1 and ``n_corpus``."""
    top_k = operator.index(top_k)
    if not 1 <= top_k <= n_corpus:
        raise ValueError(f"top_k={top_k} must be between 1 and the {n_corpus} corpus rows.")
    return top_k


def semantic_search(
    queries: Any,
    corpus: Any,
    top_k: int = 10,
    metric: str | SimilarityFunction = "cosine",
    *,
    max_block_bytes: int | None = None,
) -> tuple[Any, Any]:
    """Find the ``top_k`` most similar corpus rows for every query, streaming the corpus.

    The full ``(n_queries, n_corpus)`` matrix is never built: scores are
    computed one block of (query rows x corpus rows) at a time, each block
    within ``max_block_bytes``, and merged into a running top-k.

    Parameters
    ----------
    queries : array-like or torch.Tensor of shape (n_queries, d) or (d,)
        Query embeddings.
    corpus : array-like or torch.Tensor of shape (n_corpus, d) or (d,)
        Corpus embeddings.
    top_k : int, default=10
        Number of best rows per query; at most ``n_corpus``.
    metric : str or SimilarityFunction, default="cosine"
        Any of the four similarity functions (larger is more similar).
    max_block_bytes : int, default=None
        Size bound of one block of scores; ``None`` means
        ``DEFAULT_BLOCK_BYTES`` (64 MiB), as in :func:`similarity`.

    Returns
    -------
    scores : ndarray or torch.Tensor of shape (n_queries, top_k)
        Best scores per query, in decreasing order. ``scores[i, r]`` equals
        ``similarity(queries[i], corpus[indices[i, r]], metric)`` up to float
        rounding, whatever the block sizes.
    indices : ndarray or torch.Tensor of shape (n_queries, top_k), int64
        Corpus rows of those scores. Of equal scores, the lower corpus row
        comes first (and is kept when only some fit in ``top_k``), so the
        result does not depend on ``max_block_bytes``.

    Both are torch tensors (on the device of ``queries`` if it is a tensor,
    else of ``corpus``) whenever an input is one, otherwise numpy arrays.

    Raises
    ------
    ValueError
        If ``top_k`` is not in ``[1, n_corpus]``, the block budget cannot hold
        ``top_k`` scores, an input is sparse, or for any reason
        :func:`similarity` gives.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import semantic_search
    >>> corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> scores, indices = semantic_search(np.array([[1.0, 0.1]]), corpus, top_k=2)
    >>> indices
    array([[0, 2]])
    """
    ops = _metric_ops(SimilarityFunction(metric))
    assert ops is not None  # a SimilarityFunction always has a table entry
    pair = _check_pair(queries, corpus, ("queries", "corpus"), sparse="refuse")
    q, c = pair.x, pair.y
    top_k = checked_top_k(top_k, c.shape[0])
    budget = _block_bytes(max_block_bytes) // pair.dtype.itemsize
    if budget < top_k:
        raise ValueError(
            f"max_block_bytes={max_block_bytes} holds fewer than top_k={top_k} scores."
        )
    # Query blocks as tall as the budget allows with corpus blocks of at least top_k rows.
    query_rows = max(1, min(q.shape[0], budget // max(top_k, min(c.shape[0], 4096))))
    corpus_rows = max(top_k, budget // query_rows)
    scores = torch.empty((q.shape[0], top_k), dtype=pair.dtype, device=q.device)
    indices = torch.empty((q.shape[0], top_k), dtype=torch.int64, device=q.device)
    with torch.no_grad():
        for qs in range(0, q.shape[0], query_rows):
            best: tuple[torch.Tensor, torch.Tensor] | None = None
            for cs in range(0, c.shape[0], corpus_rows):
                q_block, c_block = _prepare(
                    ops, pair, q[qs : qs + query_rows], c[cs : cs + corpus_rows]
                )
                block = _matrix_kernel(q_block, c_block, ops.name, None).to(pair.dtype)
                best = _merge_top_k(best, block, cs, top_k)
            assert best is not None  # the corpus has at least top_k >= 1 rows
            scores[qs : qs + query_rows], indices[qs : qs + query_rows] = best
    return pair.wrap(scores), pair.wrap(indices)


def _block_bytes(max_block_bytes: Any) -> int:
    """The block budget in bytes: ``max_block_bytes`` checked, or the default."""
    if max_block_bytes is None:
        return DEFAULT_BLOCK_BYTES
    if isinstance(max_block_bytes, bool) or not isinstance(max_block_bytes, int):
        raise ValueError(f"max_block_bytes must be an int or None, got {max_block_bytes!r}.")
    if max_block_bytes < 1:
        raise ValueError(f"max_block_bytes must be >= 1 byte, got {max_block_bytes}.")
    return max_block_bytes


# --- the metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class _MetricOps:
    """How one similarity function is computed on each kind of input."""

    name: SimilarityFunction
    # The (len(x), len(y)) scores of two dense blocks, written into ``out`` if given (and
    # returned), else into a new tensor of the blocks' dtype.
    matrix: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    # Scores of row i of x with row i of y.
    rowwise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # Dense scores of two float64 inputs, each scipy sparse or numpy.
    sparse: Callable[[Any, Any], np.ndarray]
    # Rows are scaled to unit length before ``matrix`` and ``rowwise``.
    unit_rows: bool = False
    # Whether float32 inputs with these peak magnitudes (max |value| of x, of y) and
    # dimension are computed in float64, because float32 would overflow or lose the
    # small values.
    needs_float64: Callable[[float, float, int], bool] = lambda px, py, d: False
    # Dtypes in which ``matrix`` writes straight into ``out`` and allocates nothing the size
    # of the block: the whole output is then computed at once, since blocking would only
    # cost time (smaller matrix products) and save no memory.
    in_place_for: tuple[torch.dtype, ...] = ()


def _product_kernel(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.mm(x, y.T)
    if x.dtype == out.dtype:
        return torch.mm(x, y.T, out=out)
    return out.copy_(x @ y.T)


def _dot_kernel(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    out = _product_kernel(x, y, out)
    if x.dtype == torch.float64:
        # float32 inputs that could overflow arrive here as float64, which holds their
        # products; genuine float64 inputs have no wider dtype, so a product whose terms
        # overflowed (inf, or NaN where opposite infinities met) is recomputed.
        _recompute_pairs(out, *_nonfinite_pairs(out), lambda i, j: _scaled_dots(x[i], y[j]))
    return out


def _dot_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dots = (x * y).sum(dim=1)
    overflowed = ~torch.isfinite(dots)
    if overflowed.any():
        dots[overflowed] = _scaled_dots(x[overflowed], y[overflowed])
    return dots


def _scaled_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products of rows ``a[k]`` and ``b[k]`` whose terms may exceed the dtype's range.

    Each row is scaled by a power of two to a max absolute value near 1 (exactly, but
    for values too small to matter), and the dot product scaled back: to inf where it
    is beyond the dtype's range, never NaN.
    """
    # Exponents of tiny rows are capped so that the scale factor itself stays finite.
    ea = torch.frexp(a.abs().amax(dim=1)).exponent.clamp_min_(-1000)
    eb = torch.frexp(b.abs().amax(dim=1)).exponent.clamp_min_(-1000)
    dots = (torch.ldexp(a, -ea[:, None]) * torch.ldexp(b, -eb[:, None])).sum(dim=1)
    # 2**(ea + eb) itself can overflow where the result does not: applied in three
    # steps of the same sign, none of which overflows or underflows unless the result does.
    e = ea + eb
    third = torch.div(e, 3, rounding_mode="floor")
    for step in (third, third, e - 2 * third):
        dots = torch.ldexp(dots, step)
    return dots


def _euclidean_kernel(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    shape = (x.shape[0], y.shape[0])
    if out is not None and x.dtype == out.dtype:
        d2 = out
    else:
        d2 = torch.empty(shape, dtype=x.dtype, device=x.device)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return d2 if out is None else out
    # Distances do not change under a shift; centring on x's mean makes the norms, and
    # with them the rounding error below, small next to the distances of typical data.
    # (x's, not y's: semantic_search streams y in blocks, and one shift for all of a
    # query's scores keeps copies of a corpus row exactly tied.)
    center = x.mean(dim=0)
    xc, yc = x - center, y - center
    x_sq = torch.linalg.vector_norm(xc, dim=1).square_()
    y_sq = torch.linalg.vector_norm(yc, dim=1).square_()
    # x_sq + y_sq - 2 x.y as one matrix product of rows extended by [x_sq, 1] and [1, y_sq]:
    # no pass over the block to add the norms.
    ones_x, ones_y = x_sq.new_ones(x_sq.shape[0], 1), y_sq.new_ones(y_sq.shape[0], 1)
    torch.mm(
        torch.cat([xc, x_sq[:, None], ones_x], dim=1),
        torch.cat([yc.mul_(-2.0), ones_y, y_sq[:, None]], dim=1).T,
        out=d2,
    )
    _squares_to_distances(d2, x_sq, y_sq, lambda i, j: _row_norms(x[i] - y[j]))
    if out is None:
        return d2.neg_()
    if d2 is not out:
        out.copy_(d2)
    return out.neg_()


def _squares_to_distances(
    d2: torch.Tensor,
    x_sq: torch.Tensor,
    y_sq: torch.Tensor,
    exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Turn ``d2 = x_sq + y_sq - 2 x.y`` into distances, in place.

    Pairs where that formula is unreliable get ``exact(i, j)``, the distances of the
    row pairs ``(x[i], y[j])`` computed from their differences.
    """
    # Negative squares (rounding) become NaN, which every test below counts as close.
    d2.sqrt_()
    # A pair is close when its distance is under sqrt(fraction * (x_sq + y_sq)). A row can
    # only hold one if its smallest distance is under its bound with the largest y norm:
    # one read of the block finds those rows, with no temporary the size of the block.
    y_peak = y_sq.max() if y_sq.numel() else y_sq.new_zeros(())
    row_bound = torch.add(x_sq, y_peak).mul_(_CLOSE_FRACTION).sqrt_()
    # Squares near overflow (or overflowed) spoil every pair of their row, tiny squares
    # (which lose precision) the pairs where both rows have them.
    limit = torch.finfo(d2.dtype).max / 8
    x_big, y_big = ~(x_sq <= limit), ~(y_sq <= limit)
    x_tiny, y_tiny = x_sq < _TINY_SQUARES, y_sq < _TINY_SQUARES
    spoiled = bool(x_big.any() or y_big.any() or (x_tiny.any() and y_tiny.any()))
    if spoiled:
        rows = torch.arange(d2.shape[0], device=d2.device)
    else:
        rows = torch.nonzero(~(torch.amin(d2, dim=1) > row_bound))[:, 0]

    def close_in(band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Written as "not greater" so that NaN counts as close.
        close = torch.gt(_band_rows(d2, band), row_bound[band, None]).logical_not_()
        if spoiled:
            close |= x_big[band, None] | y_big
            close |= x_tiny[band, None] & y_tiny
        i, j = close.nonzero(as_tuple=True)
        i = band[i]
        # Only the pairs under their own bound stay (the spoiled ones stay whatever it says).
        near = ~torch.gt(d2[i, j], torch.add(x_sq[i], y_sq[j]).mul_(_CLOSE_FRACTION).sqrt_())
        if spoiled:
            near |= x_big[i] | y_big[j] | (x_tiny[i] & y_tiny[j])
        return i[near], j[near]

    _recompute_pairs(d2, rows, close_in, exact)


def _recompute_pairs(
    scores: torch.Tensor,
    rows: torch.Tensor,
    pairs_in: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Set ``scores[i, j] = exact(i, j)`` for the pairs ``pairs_in`` finds among ``rows``.

    ``pairs_in(band)`` returns the index tensors ``(i, j)`` of the pairs to redo in the
    rows ``band`` (an increasing index tensor).
    """
    # Scanned in row bands and computed in chunks of pairs so that even a block to
    # redo entirely (many identical rows) needs temporaries no larger than the block.
    band = max(1, scores.shape[0] // 16)
    chunk = max(1, scores.numel() // 64)
    for start in range(0, rows.shape[0], band):
        i_all, j_all = pairs_in(rows[start : start + band])
        for s in range(0, i_all.shape[0], chunk):
            i, j = i_all[s : s + chunk], j_all[s : s + chunk]
            scores[i, j] = exact(i, j).to(scores.dtype)


def _band_rows(scores: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Rows ``band`` (increasing) of ``scores``: a view when they are consecutive, else a copy."""
    first, last = int(band[0]), int(band[-1])
    return scores[first : last + 1] if len(band) == last - first + 1 else scores[band]


def _nonfinite_pairs(scores: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    """The rows of ``scores`` holding inf or NaN, and how to find those pairs in a band of rows."""
    rows = torch.nonzero(~torch.isfinite(scores).all(dim=1))[:, 0]

    def pairs_in(band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = (~torch.isfinite(_band_rows(scores, band))).nonzero(as_tuple=True)
        return band[i], j

    return rows, pairs_in


def _manhattan_kernel(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    # Sums of absolute values: no cancellation, and they overflow only where the
    # distance itself is beyond the dtype's range. Computed a tile of (x rows, y rows)
    # at a time rather than with torch.cdist, whose L1 kernel reads all of y again for
    # every row of x: a tile's differences stay in cache, and each row of them is summed
    # in a cascade, about 7x closer to the float64 distance than cdist's running sum
    # (benchmarks/similarity_speed.py measures both).
    if out is None:
        out = torch.empty((x.shape[0], y.shape[0]), dtype=x.dtype, device=x.device)
    # One buffer for every tile's differences and one for its sums: a fresh 8 MiB temporary
    # per tile would be a fresh mapping, whose page faults cost more than the arithmetic.
    dim = x.shape[1]
    x_rows = max(1, _L1_TILE_BYTES // (_L1_Y_ROWS * dim * x.element_size()))
    differences = torch.empty(x_rows * _L1_Y_ROWS * dim, dtype=x.dtype, device=x.device)
    sums = torch.empty(x_rows * _L1_Y_ROWS, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], x_rows):
        x_tile = x[i : i + x_rows, None, :]
        for j in range(0, y.shape[0], _L1_Y_ROWS):
            y_tile = y[None, j : j + _L1_Y_ROWS]
            rows, cols = x_tile.shape[0], y_tile.shape[1]
            tile = differences[: rows * cols * dim].view(rows, cols, dim)
            torch.sub(x_tile, y_tile, out=tile).abs_()
            tile_sums = torch.sum(tile, dim=2, out=sums[: rows * cols].view(rows, cols))
            torch.neg(tile_sums, out=out[i : i + rows, j : j + cols])
    return out


def _sparse_euclidean(x: Any, y: Any) -> np.ndarray:
    """Negative euclidean distances of float64 scipy sparse or numpy rows."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        x_sq, y_sq = torch.from_numpy(_squared_norms(x)), torch.from_numpy(_squared_norms(y))
        d2 = torch.from_numpy(_dense_product(x, y)).mul_(-2.0)
    d2.add_(x_sq[:, None]).add_(y_sq)

    def exact(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        with np.errstate(over="ignore"):  # an overflowing difference: an inf distance
            diff = _dense_rows(x, i.numpy()) - _dense_rows(y, j.numpy())
        return _row_norms(torch.from_numpy(diff))

    _squares_to_distances(d2, x_sq, y_sq, exact)
    return d2.neg_().numpy()


def _sparse_dot(x: Any, y: Any) -> np.ndarray:
    """Dot products of float64 scipy sparse or numpy rows, repaired as in :func:`_dot_kernel`."""
    with np.errstate(over="ignore", invalid="ignore"):
        dots = torch.from_numpy(_dense_product(x, y))

    def exact(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        a, b = _dense_rows(x, i.numpy()), _dense_rows(y, j.numpy())
        return _scaled_dots(torch.from_numpy(a), torch.from_numpy(b))

    _recompute_pairs(dots, *_nonfinite_pairs(dots), exact)
    return dots.numpy()


def _sparse_manhattan(x: Any, y: Any) -> np.ndarray:
    """Negative manhattan distances of float64 scipy sparse or numpy rows."""
    from sklearn.metrics import pairwise_distances

    # scikit-learn's finiteness check sums the values, which may overflow: no warning.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.negative(pairwise_distances(x, y, metric="manhattan"))


def _squared_norms(a: Any) -> np.ndarray:
    squares = a.multiply(a) if sp.issparse(a) else a * a
    return np.asarray(squares.sum(axis=1), dtype=np.float64).reshape(-1)


def _dense_rows(a: Any, rows: np.ndarray) -> np.ndarray:
    return a[rows].toarray() if sp.issparse(a) else a[rows]


def _dense_product(x: Any, y: Any) -> np.ndarray:
    product = x @ y.T
    return product.toarray() if sp.issparse(product) else np.asarray(product)


def _dot_needs_float64(peak_x: float, peak_y: float, dim: int) -> bool:
    return dim * peak_x * peak_y > _FLOAT32_SAFE


def _euclidean_needs_float64(peak_x: float, peak_y: float, dim: int) -> bool:
    peak = max(peak_x, peak_y)
    # Large: squared norms overflow. Small throughout: every pair would fall to the
    # exact (slow) recomputation, while float64 squares them without loss.
    return 4 * dim * peak * peak > _FLOAT32_SAFE or peak * peak < _TINY_SQUARES


_METRICS: dict[SimilarityFunction, _MetricOps] = {
    SimilarityFunction.COSINE: _MetricOps(
        name=SimilarityFunction.COSINE,
        matrix=_product_kernel,
        rowwise=lambda x, y: (x * y).sum(dim=1),
        sparse=lambda x, y: _dense_product(_unit_rows_scipy(x), _unit_rows_scipy(y)),
        unit_rows=True,
        in_place_for=(torch.float32, torch.float64),
    ),
    SimilarityFunction.DOT_PRODUCT: _MetricOps(
        name=SimilarityFunction.DOT_PRODUCT,
        matrix=_dot_kernel,
        rowwise=_dot_rows,
        sparse=_sparse_dot,
        needs_float64=_dot_needs_float64,
        # float64 products are checked for overflow with a block-sized mask: blocked.
        in_place_for=(torch.float32,),
    ),
    SimilarityFunction.EUCLIDEAN: _MetricOps(
        name=SimilarityFunction.EUCLIDEAN,
        matrix=_euclidean_kernel,
        rowwise=lambda x, y: _row_norms(x - y).neg_(),
        sparse=_sparse_euclidean,
        needs_float64=_euclidean_needs_float64,
    ),
    SimilarityFunction.MANHATTAN: _MetricOps(
        name=SimilarityFunction.MANHATTAN,
        matrix=_manhattan_kernel,
        rowwise=lambda x, y: (x - y).abs_().sum(dim=1).neg_(),
        sparse=_sparse_manhattan,
        in_place_for=(torch.float32, torch.float64),
    ),
}


def _metric_ops(metric: Any) -> _MetricOps | None:
    """The table entry of a metric name or member; None for a callable metric."""
    if callable(metric) and not isinstance(metric, str):
        return None
    return _METRICS[SimilarityFunction(metric)]


def _matrix_kernel(
    x: torch.Tensor, y: torch.Tensor, name: SimilarityFunction, out: torch.Tensor | None
) -> torch.Tensor:
    """The (len(x), len(y)) similarity block of prepared ``x`` against ``y``.

    Written into ``out`` when given (and returned), else into a new tensor of their dtype.
    """
    return _METRICS[name].matrix(x, y, out)


def _prepare(
    ops: _MetricOps, pair: _Pair, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows as the metric's kernels take them: unit rows, or float64 where float32 fails."""
    if ops.unit_rows:
        unit_x = _unit_rows(x)
        return unit_x, unit_x if y is x else _unit_rows(y)
    if pair.dtype == torch.float32 and ops.needs_float64(*pair.peaks, x.shape[1]):
        return x.double(), y.double()
    return x, y


# --- robust row norms ----------------------------------------------------------------------


def _odd_rows(norms: torch.Tensor) -> torch.Tensor:
    """Rows whose plainly computed norm may be wrong: zero, tiny, huge or overflowed."""
    low, high = _NORM_RANGE
    return ~((norms >= low) & (norms <= high))


def _peak_scaled(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` divided by their max absolute value (zero rows stay zero), and that value."""
    peak = rows.abs().amax(dim=1, keepdim=True)
    return rows / torch.where(peak > 0, peak, 1.0), peak


def _row_norms(v: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row, without overflow or underflow in the squares."""
    norms = torch.linalg.vector_norm(v, dim=1)
    odd = _odd_rows(norms)
    if odd.any():
        scaled, peak = _peak_scaled(v[odd])
        peak = peak[:, 0]
        # A difference of finite values can overflow to inf: that distance is inf.
        norms[odd] = torch.where(peak.isinf(), peak, peak * torch.linalg.vector_norm(scaled, dim=1))
    return norms


def _unit_rows(v: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm clamped at 1e-12: the reference's normalisation.

    A zero row stays zero (it scores 0 under cosine); a row of norm below 1e-12 is divided
    by 1e-12, not scaled up to unit length, as torch's ``normalize`` does.
    """
    norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    unit = v / norms.clamp_min(_NORMALIZE_EPS)
    odd = _odd_rows(norms[:, 0])
    if odd.any():
        # The plain norm of these rows may have overflowed or underflowed: compare the norm,
        # peak * |scaled|, with the clamp without forming it.
        scaled, peak = _peak_scaled(v[odd])
        scaled_norms = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)
        unit[odd] = torch.where(
            scaled_norms * peak >= _NORMALIZE_EPS,
            scaled / scaled_norms.clamp_min(1.0),
            v[odd] / _NORMALIZE_EPS,
        )
    return unit


def _unit_rows_scipy(a: Any) -> Any:
    """:func:`_unit_rows` for float64 scipy sparse or numpy rows."""
    if sp.issparse(a):
        a = sp.csr_array(a, copy=True)
        values, peak = a.data, abs(a).max(axis=1).toarray().reshape(-1)
        rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
        squared_norms = lambda v: np.bincount(rows, weights=v * v, minlength=a.shape[0])  # noqa: E731
    else:
        values, peak = a, np.abs(a).max(axis=1)
        rows = np.arange(a.shape[0])[:, None]
        squared_norms = lambda v: (v * v).sum(axis=1)  # noqa: E731
    # Scaled to a peak of 1 first, so that no square overflows or underflows.
    scaled = values / np.where(peak > 0, peak, 1.0)[rows]
    scaled_norms = np.sqrt(squared_norms(scaled))
    # Overflows happen only in the branch of np.where that is not taken.
    with np.errstate(over="ignore"):
        large = scaled_norms * peak >= _NORMALIZE_EPS
        unit = np.where(
            large[rows], scaled / np.where(large, scaled_norms, 1.0)[rows], values / _NORMALIZE_EPS
        )
    if sp.issparse(a):
        a.data = unit
        return a
    return unit


# --- top-k ---------------------------------------------------------------------------------


def _merge_top_k(
    best: tuple[torch.Tensor, torch.Tensor] | None, block: torch.Tensor, offset: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` of the running ``best`` and a block of later corpus rows starting at ``offset``.

    Rows are ordered by decreasing score, equal scores by increasing corpus row, and
    of equal scores at the cut the lower rows are kept.
    """
    k_block = min(k, block.shape[1])
    # One score past the cut shows whether equal scores straddle it: topk leaves
    # unspecified which of them it keeps, so those rows are decided by a stable sort.
    scores, cols = torch.topk(block, min(k_block + 1, block.shape[1]), dim=1)
    if scores.shape[1] > k_block:
        undecided = scores[:, k_block] == scores[:, k_block - 1]
        scores, cols = scores[:, :k_block], cols[:, :k_block]
        if undecided.any():
            rows = undecided.nonzero()[:, 0]
            ranked = torch.sort(block[rows], dim=1, descending=True, stable=True)
            scores[rows], cols[rows] = ranked.values[:, :k_block], ranked.indices[:, :k_block]
    cols, order = torch.sort(cols, dim=1)
    scores = scores.gather(1, order)
    cols += offset
    if best is not None:
        # The running best comes first: its rows are lower than the block's.
        scores, cols = torch.cat([best[0], scores], dim=1), torch.cat([best[1], cols], dim=1)
    scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return scores[:, :k], cols.gather(1, order[:, :k])


# --- input checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    """Two checked inputs, and how to hand results back.

    ``x`` and ``y`` are 2-D: torch tensors on one device with dtype ``dtype``, or, when
    ``sparse`` is set, each a scipy CSR array or a numpy array of its own float dtype.
    """

    x: Any
    y: Any
    one_d: tuple[bool, bool]
    # Max absolute value of x and of y (0 for empty inputs).
    peaks: tuple[float, float]
    dtype: torch.dtype
    # Device of the first torch input; None if neither input is a tensor (numpy out).
    device: torch.device | None
    sparse: bool

    def wrap(self, result: torch.Tensor | np.ndarray) -> Any:
        """``result`` as the caller's kind: a tensor on ``device``, else a numpy array."""
        if self.device is None:
            return result.cpu().numpy() if isinstance(result, torch.Tensor) else result
        if not isinstance(result, torch.Tensor):  # an array or a numpy scalar
            result = torch.from_numpy(np.asarray(result))
        return result.to(self.device)


def _check_pair(X: Any, Y: Any, names: tuple[str, str], *, sparse: str) -> _Pair:
    """Check two embedding inputs the same way for every public function.

    ``Y=None`` means ``X`` itself. ``sparse`` says what becomes of scipy sparse input:
    ``"keep"`` (the pair is then computed with scipy), ``"densify"`` or ``"refuse"``.
    """
    x, x_1d, peak_x = _check_embeddings(X, names[0], sparse)
    y, y_1d, peak_y = (x, x_1d, peak_x) if Y is None else _check_embeddings(Y, names[1], sparse)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"Embedding dimensions differ: {names[0]} has {x.shape[1]} values per row, "
            f"{names[1]} has {y.shape[1]}."
        )
    tensors = [a for a in (X, Y) if isinstance(a, torch.Tensor)]
    device = tensors[0].device if tensors else None
    dtype = torch.promote_types(_torch_dtype(x.dtype), _torch_dtype(y.dtype))
    is_sparse = sp.issparse(x) or sp.issparse(y)
    if is_sparse:
        x, y = (a if sp.issparse(a) else _numpy_rows(a) for a in (x, y))
    else:
        x = x.to(device=x.device if device is None else device, dtype=dtype)
        y = y.to(device=x.device, dtype=dtype)
    return _Pair(x, y, (x_1d, y_1d), (peak_x, peak_y), dtype, device, is_sparse)


def _check_embeddings(a: Any, name: str, sparse: str) -> tuple[Any, bool, float]:
    """One input as a 2-D float tensor (or scipy CSR array), whether it was 1-D, its peak."""
    if isinstance(a, torch.Tensor):
        values = _float_tensor(a, name)
    elif sp.issparse(a):
        if sparse == "refuse":
            raise ValueError(
                f"{name} is a scipy sparse matrix; this function takes dense embeddings "
                "(use .toarray(), or similarity(), which accepts sparse input)."
            )
        values = _float_sparse(a, name)
    else:
        values = _float_tensor(torch.from_numpy(_float_array(a, name)), name)
    shape = tuple(values.shape)
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{name} must be one embedding of shape (d,) or embeddings of shape (n, d); got "
            f"{len(shape)} dimensions (shape {shape})."
        )
    if shape[-1] == 0:
        raise ValueError(
            f"{name} holds embeddings of dimension 0 (shape {shape}); an embedding needs at "
            "least one value."
        )
    one_d = len(shape) == 1
    if one_d:
        values = values.reshape(1, -1)
    if sp.issparse(values):
        values = sp.csr_array(values)
        if sparse == "densify":
            values = torch.from_numpy(values.toarray())
    peak = _peak(values)
    if not math.isfinite(peak):
        raise ValueError(
            f"{name} contains NaN or infinity; similarity needs finite embedding values."
        )
    return values, one_d, peak


def _float_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.layout != torch.strided:
        raise ValueError(
            f"{name} is a sparse torch tensor ({t.layout}); pass a dense tensor "
            "(.to_dense()) or a scipy sparse matrix."
        )
    if t.is_complex():
        raise ValueError(f"{name} has complex dtype {t.dtype}; embeddings are real numbers.")
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        # Matrix products in half precision round scores onto a coarse grid.
        return t.float()
    return t if t.is_floating_point() else t.double()


def _float_sparse(a: Any, name: str) -> Any:
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{name} is a sparse matrix of dtype {a.dtype}; expected real numbers.")
    return a.astype(_numpy_dtype(_torch_dtype(a.dtype)), copy=False)


def _float_array(a: Any, name: str) -> np.ndarray:
    """Any other input as a contiguous numpy float32 or float64 array."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged nesting, unconvertible objects
        raise ValueError(f"{name} is not an array of numbers: {exc}") from exc
    kind = arr.dtype.kind
    if kind in "US":
        raise ValueError(
            f"{name} holds strings (dtype {arr.dtype}); similarity compares embeddings: encode "
            "texts first, e.g. with SentenceEmbedder.transform."
        )
    if kind == "c":
        raise ValueError(f"{name} has complex dtype {arr.dtype}; embeddings are real numbers.")
    if kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} is not an array of numbers: {exc}") from exc
    elif kind not in "fiub":
        raise ValueError(f"{name} has dtype {arr.dtype}; expected real numbers.")
    arr = arr.astype(_numpy_dtype(_torch_dtype(arr.dtype)), copy=False)
    # torch cannot view a read-only or non-contiguous array without a copy (made here
    # rather than with ascontiguousarray, which turns a 0-d array into shape (1,)).
    return arr if arr.flags.c_contiguous and arr.flags.writeable else arr.copy(order="C")


def _torch_dtype(dtype: Any) -> torch.dtype:
    """float64 stays float64, other floats compute as float32, integers and bools as float64."""
    if isinstance(dtype, torch.dtype):
        return dtype
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return torch.float32
    return torch.float64


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(np.float32 if dtype == torch.float32 else np.float64)


def _peak(values: Any) -> float:
    """Max absolute value; NaN if any value is NaN (inf if one is infinite)."""
    data = values.data if sp.issparse(values) else values
    if data.shape[0] == 0 or math.prod(data.shape) == 0:
        return 0.0
    if isinstance(data, torch.Tensor):
        low, high = torch.aminmax(data)
        return max(-float(low), float(high)) if not torch.isnan(low) else math.nan
    return float(np.max(np.abs(data)))


def _numpy_rows(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.cpu().numpy()
    return a.toarray() if sp.issparse(a) else a


def _float64(a: Any) -> Any:
    return a.astype(np.float64, copy=False)
