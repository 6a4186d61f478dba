"""Similarity functions between embeddings, with no knowledge of models.

The formulas are those of sentence-transformers' ``util`` module: cosine is the
product of L2-normalised rows (a zero row scores 0), dot is the plain product,
euclidean and manhattan are *negative* L2 and L1 distances, so that for every
metric a larger value means "more similar".
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["SimilarityFunction", "pairwise_similarity", "semantic_search", "similarity"]

# Row blocks are sized so one block's temporaries stay near this many elements
# (64 MiB in float32), and under an eighth of the output for small outputs, so the
# peak memory of similarity() stays close to the size of its result.
_BLOCK_ELEMENTS = 1 << 24


class SimilarityFunction(str, Enum):
    """The similarity functions that compare two embeddings.

    Members compare equal to their string value, so ``"cosine"`` and
    ``SimilarityFunction.COSINE`` can be used interchangeably.

    Attributes
    ----------
    COSINE : "cosine"
        Cosine similarity, in [-1, 1].
    DOT_PRODUCT : "dot"
        Dot product. ``DOT`` is an alias.
    EUCLIDEAN : "euclidean"
        Negative euclidean (L2) distance.
    MANHATTAN : "manhattan"
        Negative manhattan (L1) distance.

    Examples
    --------
    >>> from skembed import SimilarityFunction
    >>> SimilarityFunction("manhattan")
    <SimilarityFunction.MANHATTAN: 'manhattan'>
    >>> SimilarityFunction.possible_values()
    ['cosine', 'dot', 'euclidean', 'manhattan']
    """

    COSINE = "cosine"
    DOT_PRODUCT = "dot"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @classmethod
    def _missing_(cls, value: object) -> SimilarityFunction:
        if isinstance(value, str):
            key = value.strip().lower()
            if key == "dot_product":
                return cls.DOT_PRODUCT
            for member in cls:
                if member.value == key:
                    return member
        raise ValueError(
            f"Unknown similarity function {value!r}; expected one of "
            f"{cls.possible_values()} (or a SimilarityFunction member)."
        )

    @staticmethod
    def possible_values() -> list[str]:
        """Return the names of the supported similarity functions.

        Returns
        -------
        list of str
            ``["cosine", "dot", "euclidean", "manhattan"]``.
        """
        return [member.value for member in SimilarityFunction]

    def __str__(self) -> str:
        return self.value


Metric = str | SimilarityFunction | Callable[[np.ndarray, np.ndarray], float]


def similarity(X: Any, Y: Any = None, metric: Metric = "cosine") -> Any:
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
        callable ``f(x_row, y_row) -> float`` evaluated on each pair of rows
        (as in scikit-learn); callables work on numpy rows and return numpy.

    Returns
    -------
    ndarray or torch.Tensor of shape (n_x, n_y)
        A torch tensor (on the device of ``X``) for torch input, otherwise a
        numpy array. float32 input gives float32 output. Inputs are treated as
        data: no gradient flows through the result.

    Raises
    ------
    ValueError
        If the metric is unknown or the embedding dimensions differ.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import similarity
    >>> similarity(np.array([[1.0, 0.0], [1.0, 1.0]]), metric="cosine").round(4)
    array([[1.    , 0.7071],
           [0.7071, 1.    ]])
    """
    if Y is None:
        Y = X
    if callable(metric) and not isinstance(metric, str):
        x, y = _as_numpy_2d(X, "X"), _as_numpy_2d(Y, "Y")
        _check_dims(x, y)
        return np.array([[metric(a, b) for b in y] for a in x], dtype=np.result_type(x, y))
    name = SimilarityFunction(metric)
    if sp.issparse(X) or sp.issparse(Y):
        return _sparse_similarity(X, Y, name)
    as_torch = isinstance(X, torch.Tensor) or isinstance(Y, torch.Tensor)
    x, y = _as_tensor_2d(X, "X"), _as_tensor_2d(Y, "Y")
    _check_dims(x, y)
    x, y = _common_dtype(x, y)
    out = torch.empty((x.shape[0], y.shape[0]), dtype=x.dtype, device=x.device)
    if name is SimilarityFunction.COSINE:
        x, y = _l2_normalize(x), _l2_normalize(y)
    block = min(_BLOCK_ELEMENTS, out.numel() // 8)
    rows = max(1, block // max(1, y.shape[0]))
    with torch.no_grad():
        for start in range(0, x.shape[0], rows):
            block = out[start : start + rows]
            _matrix_kernel(x[start : start + rows], y, name, block)
    return out if as_torch else out.numpy()


def pairwise_similarity(X: Any, Y: Any, metric: Metric = "cosine") -> Any:
    """Compute the similarity of each row of ``X`` with the same row of ``Y``.

    Parameters
    ----------
    X : array-like, torch.Tensor or scipy sparse matrix of shape (n, d)
        Embeddings.
    Y : same kinds as X, of shape (n, d)
        Embeddings, one per row of ``X``.
    metric : str, SimilarityFunction or callable, default="cosine"
        As in :func:`similarity`.

    Returns
    -------
    ndarray or torch.Tensor of shape (n,)
        ``out[i] = similarity(X[i], Y[i])``. Two 1-D inputs give a 0-d result,
        as in the reference library.

    Raises
    ------
    ValueError
        If the metric is unknown, or the shapes of ``X`` and ``Y`` differ.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import pairwise_similarity
    >>> pairwise_similarity(np.eye(2), np.ones((2, 2)), metric="dot")
    array([1., 1.])
    """
    # The row-wise kernels are dense torch ops; an (n, d) dense copy is cheap next to them.
    X = X.toarray() if sp.issparse(X) else X
    Y = Y.toarray() if sp.issparse(Y) else Y
    scalar = np.ndim(X) == 1 and np.ndim(Y) == 1
    if callable(metric) and not isinstance(metric, str):
        x, y = _as_numpy_2d(X, "X"), _as_numpy_2d(Y, "Y")
        _check_same_shape(x, y)
        out = np.array(
            [metric(a, b) for a, b in zip(x, y, strict=True)], dtype=np.result_type(x, y)
        )
        return out[0] if scalar else out
    name = SimilarityFunction(metric)
    as_torch = isinstance(X, torch.Tensor) or isinstance(Y, torch.Tensor)
    x, y = _as_tensor_2d(X, "X"), _as_tensor_2d(Y, "Y")
    _check_same_shape(x, y)
    x, y = _common_dtype(x, y)
    with torch.no_grad():
        if name is SimilarityFunction.COSINE:
            out = (_l2_normalize(x) * _l2_normalize(y)).sum(dim=-1)
        elif name is SimilarityFunction.DOT_PRODUCT:
            out = (x * y).sum(dim=-1)
        elif name is SimilarityFunction.EUCLIDEAN:
            out = -torch.linalg.vector_norm(x - y, dim=-1)
        else:
            out = -(x - y).abs().sum(dim=-1)
    if scalar:
        out = out[0]
    return out if as_torch else out.numpy()


def semantic_search(
    queries: Any,
    corpus: Any,
    top_k: int = 10,
    metric: str | SimilarityFunction = "cosine",
    *,
    max_block_bytes: int = 64 << 20,
) -> tuple[Any, Any]:
    """Find the ``top_k`` most similar corpus rows for every query, streaming the corpus.

    The full ``(n_queries, n_corpus)`` matrix is never built: scores are
    computed one block of (query rows x corpus rows) at a time, each block
    within ``max_block_bytes``, and merged into a running top-k.

    Parameters
    ----------
    queries : array-like or torch.Tensor of shape (n_queries, d) or (d,)
        Query embeddings.
    corpus : array-like or torch.Tensor of shape (n_corpus, d)
        Corpus embeddings.
    top_k : int, default=10
        Number of best rows per query; at most ``n_corpus``.
    metric : str or SimilarityFunction, default="cosine"
        Any of the four similarity functions (larger is more similar).
    max_block_bytes : int, default=64 MiB
        Size bound of one block of scores.

    Returns
    -------
    scores : ndarray or torch.Tensor of shape (n_queries, top_k)
        Best scores per query, in decreasing order.
    indices : ndarray or torch.Tensor of shape (n_queries, top_k), int64
        Corpus rows of those scores.

    Raises
    ------
    ValueError
        If ``top_k`` is not in ``[1, n_corpus]``, the block budget cannot hold
        one score, or the dimensions differ.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import semantic_search
    >>> corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> scores, indices = semantic_search(np.array([[1.0, 0.1]]), corpus, top_k=2)
    >>> indices
    array([[0, 2]])
    """
    name = SimilarityFunction(metric)
    as_torch = isinstance(queries, torch.Tensor) or isinstance(corpus, torch.Tensor)
    q, c = _as_tensor_2d(queries, "queries"), _as_tensor_2d(corpus, "corpus")
    _check_dims(q, c)
    q, c = _common_dtype(q, c)
    if not 1 <= top_k <= c.shape[0]:
        raise ValueError(f"top_k={top_k} must be between 1 and the {c.shape[0]} corpus rows.")
    budget = max_block_bytes // q.element_size()
    if budget < top_k:
        raise ValueError(
            f"max_block_bytes={max_block_bytes} holds fewer than top_k={top_k} scores."
        )
    # Query blocks as tall as the budget allows with corpus blocks of at least top_k rows.
    query_rows = max(1, min(q.shape[0], budget // max(top_k, min(c.shape[0], 4096))))
    corpus_rows = max(top_k, budget // query_rows)
    scores = torch.empty((q.shape[0], top_k), dtype=q.dtype, device=q.device)
    indices = torch.empty((q.shape[0], top_k), dtype=torch.int64, device=q.device)
    with torch.no_grad():
        for qs in range(0, q.shape[0], query_rows):
            q_block = q[qs : qs + query_rows]
            if name is SimilarityFunction.COSINE:
                q_block = _l2_normalize(q_block)
            best_scores = best_indices = None
            for cs in range(0, c.shape[0], corpus_rows):
                c_block = c[cs : cs + corpus_rows]
                if name is SimilarityFunction.COSINE:
                    c_block = _l2_normalize(c_block)
                block = torch.empty(
                    (q_block.shape[0], c_block.shape[0]), dtype=q.dtype, device=q.device
                )
                _matrix_kernel(q_block, c_block, name, block)
                k = min(top_k, block.shape[1])
                block_scores, block_indices = torch.topk(block, k, dim=1)
                block_indices += cs
                if best_scores is not None:
                    block_scores = torch.cat([best_scores, block_scores], dim=1)
                    block_indices = torch.cat([best_indices, block_indices], dim=1)
                    block_scores, order = torch.topk(block_scores, top_k, dim=1)
                    block_indices = torch.gather(block_indices, 1, order)
                best_scores, best_indices = block_scores, block_indices
            scores[qs : qs + query_rows] = best_scores
            indices[qs : qs + query_rows] = best_indices
    if as_torch:
        return scores, indices
    return scores.numpy(), indices.numpy()


def _matrix_kernel(
    x: torch.Tensor, y: torch.Tensor, name: SimilarityFunction, out: torch.Tensor
) -> None:
    """Write the (len(x), len(y)) similarity block of ``x`` against ``y`` into ``out``."""
    if name in (SimilarityFunction.COSINE, SimilarityFunction.DOT_PRODUCT):
        torch.mm(x, y.T, out=out)
        return
    p = 2.0 if name is SimilarityFunction.EUCLIDEAN else 1.0
    # torch.cdist is the reference's kernel: same algorithm, same rounding.
    out.copy_(torch.cdist(x, y, p=p)).neg_()


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # Same eps as torch.nn.functional.normalize, which the reference uses:
    # a zero row stays zero and so scores 0 under cosine.
    return torch.nn.functional.normalize(x, p=2.0, dim=-1)


def _sparse_similarity(X: Any, Y: Any, name: SimilarityFunction) -> np.ndarray:
    from sklearn.metrics import pairwise_distances
    from sklearn.preprocessing import normalize

    x = _as_sparse_or_dense_2d(X, "X")
    y = _as_sparse_or_dense_2d(Y, "Y")
    _check_dims(x, y)
    dtype = np.result_type(x.dtype, y.dtype)
    if name is SimilarityFunction.COSINE:
        x, y = normalize(x), normalize(y)
    if name in (SimilarityFunction.COSINE, SimilarityFunction.DOT_PRODUCT):
        product = x @ y.T
        return (product.toarray() if sp.issparse(product) else np.asarray(product)).astype(
            dtype, copy=False
        )
    distances = pairwise_distances(x, y, metric=name.value)
    return np.negative(distances, out=distances).astype(dtype, copy=False)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    """float32 and float64 are kept, smaller floats become float32, the rest float64."""
    if dtype in (np.float32, np.float64):
        return dtype
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _as_numpy_2d(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = (
            a.detach().float().cpu().numpy()
            if a.dtype == torch.bfloat16
            else a.detach().cpu().numpy()
        )
    elif sp.issparse(a):
        a = a.toarray()
    arr = np.asarray(a)
    arr = arr.astype(_float_dtype(arr.dtype), copy=False)
    return _promote_2d(arr, name)


def _as_sparse_or_dense_2d(a: Any, name: str) -> Any:
    if sp.issparse(a):
        return a.astype(_float_dtype(a.dtype), copy=False).tocsr()
    return _as_numpy_2d(a, name)


def _as_tensor_2d(a: Any, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a
        if not t.is_floating_point():
            t = t.double()
        elif t.dtype in (torch.float16, torch.bfloat16):
            # Matrix products in half precision round scores onto a coarse grid.
            t = t.float()
    else:
        arr = np.asarray(a)
        # Checked before ascontiguousarray, which turns a 0-d array into shape (1,).
        _promote_2d(arr, name)
        if arr.dtype == object:
            raise ValueError(f"{name} must be a numeric array of embeddings, got dtype object.")
        # A read-only or non-contiguous array cannot be viewed by torch without a copy.
        arr = np.ascontiguousarray(arr.astype(_float_dtype(arr.dtype), copy=False))
        t = torch.from_numpy(arr) if arr.flags.writeable else torch.tensor(arr)
    return _promote_2d(t, name)


def _common_dtype(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``y`` to the device of ``x``, and both to their promoted dtype."""
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype=dtype), y.to(device=x.device, dtype=dtype)


def _promote_2d(a: Any, name: str) -> Any:
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D embedding or a 2-D array of embeddings, got {a.ndim} dimensions "
            f"(shape {tuple(a.shape)})."
        )
    return a


def _check_dims(x: Any, y: Any) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"Embedding dimensions differ: X has {x.shape[1]} values per row, Y has {y.shape[1]}."
        )


def _check_same_shape(x: Any, y: Any) -> None:
    _check_dims(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "pairwise_similarity compares row i of X with row i of Y, so both need the same "
            f"number of rows; got {x.shape[0]} and {y.shape[0]}."
        )
