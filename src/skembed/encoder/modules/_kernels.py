"""Matrix products on the CPU through oneDNN where torch ships it.

For float32, ``torch.nn.functional.linear`` calls MKL, which runs slower than oneDNN
on AMD CPUs (144-193 against 192-213 GFLOP/s on an AVX-512 AMD EPYC, see
``benchmarks/README.md``). torch bundles oneDNN for its own compiler; its linear
operator is called here directly when it is present. Both compute the same float32
products; only the order of the additions differs (relative differences near 1e-7).
Everything else (other devices and dtypes, a torch built without oneDNN) goes to the
plain torch call.
"""

from __future__ import annotations

import functools

import torch

from ..._device import cpu_has_bfloat16_units

__all__ = ["linear"]


def _onednn_linear():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear()


@functools.cache
def _bfloat16_units() -> bool:
    # Without bfloat16 instructions oneDNN would emulate them; torch's own path is kept.
    # Read once: the answer cannot change, and the check reads /proc/cpuinfo.
    return cpu_has_bfloat16_units()


def _uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if _ONEDNN_LINEAR is None or x.device.type != "cpu" or x.dtype != weight.dtype:
        return False
    if x.dtype == torch.float32:
        return True
    return x.dtype == torch.bfloat16 and _bfloat16_units()


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    gelu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias``, then the exact (erf) GELU or a residual added.

    On the oneDNN path the GELU or the residual is computed inside the product,
    with no second pass over the output.

    Parameters
    ----------
    x : Tensor of shape (rows, in_features)
    weight : Tensor of shape (out_features, in_features)
    bias : Tensor of shape (out_features,), optional
    gelu : bool, default=False
        Apply ``torch.nn.functional.gelu`` to the result.
    residual : Tensor of shape (rows, out_features), optional
        Added to the result (after the bias); not together with ``gelu``.

    Returns
    -------
    Tensor of shape (rows, out_features)
    """
    if gelu and residual is not None:
        raise ValueError("linear takes gelu or residual, not both.")
    if _uses_onednn(x, weight):
        x, weight = x.contiguous(), weight.contiguous()
        if residual is not None:
            return _ONEDNN_LINEAR.binary(x, residual.contiguous(), weight, bias, "add")
        attr, algorithm = ("gelu", "none") if gelu else ("none", "")
        return _ONEDNN_LINEAR(x, weight, bias, attr, [], algorithm)
    out = torch.nn.functional.linear(x, weight, bias)
    if residual is not None:
        return out.add_(residual)
    return torch.nn.functional.gelu(out) if gelu else out
