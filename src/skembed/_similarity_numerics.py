"""The numerics of the similarity kernels at every magnitude of the values.

The plain formulas (a matrix product, ``||x||^2 + ||y||^2 - 2 x.y``) lose the
result where values are tiny, huge or nearly equal: here each kernel detects
those rows and pairs and recomputes them exactly (scaled rows, differences,
float64), so that a float32 result equals the float64 one rounded to float32.
:mod:`skembed._similarity` holds the public functions and the table of metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

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
