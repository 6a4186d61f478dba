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
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._similarity_function import SimilarityFunction
from ._similarity_numerics import (
    _dense_product,
    _dot_kernel,
    _dot_needs_float64,
    _dot_rows,
    _euclidean_kernel,
    _euclidean_needs_float64,
    _manhattan_kernel,
    _product_kernel,
    _row_norms,
    _sparse_dot,
    _sparse_euclidean,
    _sparse_manhattan,
    _unit_rows,
    _unit_rows_scipy,
)

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "SimilarityFunction",
    "checked_block_bytes",
    "paired_similarity",
    "semantic_search",
    "similarity",
]

# The one memory budget of this module: scores whose computation needs temporaries are
# computed in blocks of at most this many bytes (``max_block_bytes`` of similarity and
# semantic_search), so that the peak memory of a large similarity matrix stays close to the
# size of the matrix itself.
DEFAULT_BLOCK_BYTES = 64 << 20

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
    budget = checked_block_bytes(max_block_bytes)
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
    groups: Any = None,
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
    groups : array-like of int of shape (n_corpus,), default=None
        The group (e.g. the document) of each corpus row, such as the
        ``text_index`` of ``SentenceEmbedder.transform_chunks``. Given, the
        search ranks groups, each scored by its best row: ``indices`` are then
        group ids, ``top_k`` at most the number of groups, and of equal scores
        the lower group id comes first.

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
    budget = checked_block_bytes(max_block_bytes) // pair.dtype.itemsize
    if groups is not None:
        return _search_groups(ops, pair, groups, top_k, budget)
    top_k = checked_top_k(top_k, c.shape[0])
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


def _search_groups(
    ops: _MetricOps, pair: _Pair, groups: Any, top_k: Any, budget: int
) -> tuple[Any, Any]:
    """The best ``top_k`` groups of corpus rows per query, a group scored by its best row."""
    q, c = pair.x, pair.y
    labels = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
    if labels.shape != (c.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"groups must hold one integer per corpus row ({c.shape[0]}); got an array of "
            f"shape {labels.shape} and dtype {labels.dtype}."
        )
    order = np.argsort(labels, kind="stable")
    ids, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    top_k = checked_top_k(top_k, len(ids))
    rows = torch.from_numpy(order).to(c.device)
    best = torch.empty((q.shape[0], len(ids)), dtype=pair.dtype, device=q.device)
    # Blocks of whole groups, about budget / queries corpus rows each.
    per_block = max(1, budget // max(q.shape[0], 1))
    with torch.no_grad():
        first = 0
        while first < len(ids):
            last = max(first + 1, int(np.searchsorted(starts, starts[first] + per_block)))
            span = slice(int(starts[first]), int(starts[last - 1] + sizes[last - 1]))
            q_block, c_block = _prepare(ops, pair, q, c[rows[span]])
            block = _matrix_kernel(q_block, c_block, ops.name, None).to(pair.dtype)
            owner = torch.repeat_interleave(torch.from_numpy(sizes[first:last])).to(q.device)
            target = best[:, first:last].fill_(-torch.inf)
            target.scatter_reduce_(1, owner.expand(q.shape[0], -1), block, "amax")
            first = last
        scores, positions = torch.sort(best, dim=1, descending=True, stable=True)
    found = torch.from_numpy(ids.astype(np.int64)).to(positions.device)[positions[:, :top_k]]
    return pair.wrap(scores[:, :top_k]), pair.wrap(found)


def checked_block_bytes(max_block_bytes: Any) -> int:
    """The block budget in bytes: ``max_block_bytes`` checked, or the default.

    The one budget of everything that computes scores a block at a time
    (``similarity``, ``semantic_search``, ``paraphrase_mining``).
    """
    if max_block_bytes is None:
        return DEFAULT_BLOCK_BYTES
    if isinstance(max_block_bytes, bool) or not isinstance(max_block_bytes, Integral):
        raise ValueError(f"max_block_bytes must be an int or None, got {max_block_bytes!r}.")
    if max_block_bytes < 1:
        raise ValueError(f"max_block_bytes must be >= 1 byte, got {max_block_bytes}.")
    return int(max_block_bytes)


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
