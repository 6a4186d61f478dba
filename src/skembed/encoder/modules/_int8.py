"""Int8 matrix products for the unpadded BERT pass on the CPU (``dtype="int8"``).

Every linear layer of the transformer runs as an 8-bit integer product through
oneDNN (``torch.ops.onednn.qlinear_pointwise``, shipped with torch): weights are
quantized per output channel (symmetric int8), activations per tensor (asymmetric
uint8) with a **static** range, and the product's int32 result is scaled back to
float32 with the bias, and the GELU or the residual, inside the same kernel.

The activation ranges are calibrated once, when the model is loaded, by running the
float32 pass over a fixed set of texts (the first STSb train sentences bundled with
skembed). Ranges fixed in advance keep a text's vector independent of the other
texts it is batched with: ranges measured per batch would make the same text give
different vectors from call to call, which an embedding cache cannot tolerate.
Values outside a calibrated range are clipped to it.

Measured against float32 on all-MiniLM-L6-v2 (``benchmarks/encode_cpu.py``): STSb
Spearman within 0.5 points, but single vectors differ (cosine to float32 down to
about 0.96), so float32 stays the default.

The calibration is part of a vector's identity: :func:`precision_key` (in every
cache and store key) names the method and a digest of the calibration texts, so
vectors of another calibration are never served for this one.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ._packed import PackedBert, Products

__all__ = [
    "Int8Linears",
    "calibrate_packed",
    "calibration_texts",
    "int8_available",
    "precision_key",
]

# Enough texts to see each layer's range settle (more changed no Spearman digit).
_CALIBRATION_TEXTS = 512
_U8_MAX = 255
# How the ranges and weights are quantized. Change this name with the method (range
# statistic, rounding, which products are fused), so that int8 vectors stored under the
# old method are not served for the new one.
CALIBRATION_METHOD = "minmax-u8-per-tensor/int8-per-channel-symmetric/v1"


def precision_key(dtype: torch.dtype) -> str:
    """The precision part of a vector's identity, as cache and store keys hold it.

    ``str(dtype)`` for float precisions; for int8 also the calibration (its
    method and a digest of its texts), since another calibration gives other
    vectors from the same model.

    Parameters
    ----------
    dtype : torch.dtype
        The precision the transformer runs in.

    Returns
    -------
    str
    """
    if dtype != torch.int8:
        return str(dtype)
    digest = hashlib.sha256(CALIBRATION_METHOD.encode())
    for text in calibration_texts():
        digest.update(text.encode("utf-8") + b"\0")
    return f"{dtype}/{CALIBRATION_METHOD}/{digest.hexdigest()[:16]}"


def int8_available() -> bool:
    """Whether this torch ships oneDNN's int8 linear operator."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.onednn.qlinear_pointwise  # noqa: B018 - a lookup that may raise
        torch.ops.onednn.qlinear_prepack  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


@functools.cache
def calibration_texts() -> tuple[str, ...]:
    """The fixed texts whose float32 activations set the int8 ranges.

    The first sentences of the STSb train split bundled with skembed: the same
    texts on every machine, so the same model gives the same int8 vectors.
    """
    path = resources.files("skembed") / "data" / "stsb" / "train.tsv"
    texts: list[str] = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            texts.append(row["sentence1"])
            if len(texts) == _CALIBRATION_TEXTS:
                break
    return tuple(texts)


class _Range:
    """Running minimum and maximum of one linear layer's input."""

    def __init__(self) -> None:
        self.low = 0.0
        self.high = 0.0

    def update(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x)
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))


class _QuantizedLinear:
    """One linear layer as a oneDNN int8 product with a static input range."""

    def __init__(self, module: torch.nn.Linear, value_range: _Range) -> None:
        weight = module.weight.detach().float()
        # Symmetric per output channel; an all-zero row keeps a scale of 1.
        scales = weight.abs().amax(dim=1) / 127
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        self.weight_scales = scales
        self.weight_zero_points = torch.zeros(len(scales), dtype=torch.long)
        quantized = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        self.packed = torch.ops.onednn.qlinear_prepack(quantized, None)
        self.bias = None if module.bias is None else module.bias.detach().float()
        # The range always holds 0, so a zero input (padding rows) is exact.
        span = max(value_range.high - value_range.low, 1e-8)
        self.input_scale = span / _U8_MAX
        self.input_zero_point = round(-value_range.low / self.input_scale)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as uint8 in this layer's input range, clipped to it."""
        # One pass over x, where the same arithmetic in torch operators took five
        # (2.2x the time, measured). torch marks quantized tensors deprecated: its
        # warning, once per process, says nothing the user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        return q.int_repr()

    def __call__(
        self,
        q: torch.Tensor,
        *,
        gelu: bool = False,
        residual: torch.Tensor | None = None,
        into: _QuantizedLinear | None = None,
    ) -> torch.Tensor:
        """The product of quantized input ``q``: float32, or uint8 quantized for ``into``."""
        args = (q, self.input_scale, self.input_zero_point, self.packed)
        output = (1.0, 0, torch.float32)
        if into is not None:
            output = (into.input_scale, into.input_zero_point, None)
        scales = (self.weight_scales, self.weight_zero_points, self.bias, *output)
        if residual is not None:
            return torch.ops.onednn.qlinear_pointwise.binary(
                *args,
                *scales[:2],
                residual.contiguous(),
                self.bias,
                1.0,
                0,
                torch.float32,
                1.0,
                0,
                "add",
                1.0,
                "none",
                [],
                "",
            )
        attr, algorithm = ("gelu", "none") if gelu else ("none", "")
        return torch.ops.onednn.qlinear_pointwise(*args, *scales, attr, [None], algorithm)


class Int8Linears:
    """The int8 products of a BERT model's linear layers, calibrated on fixed texts.

    Used by :class:`~skembed.encoder.modules._packed.PackedBert` in place of its float32
    products; build it with :meth:`calibrate`.

    Parameters
    ----------
    ranges : dict of torch.nn.Module to _Range
        The input range of each linear layer (of each attention's query, key and
        value products together, keyed by the attention's ``self`` module) seen in
        float32 calibration.
    """

    def __init__(self, ranges: dict[torch.nn.Module, _Range], model: torch.nn.Module) -> None:
        self._layers: dict[torch.nn.Module, _QuantizedLinear] = {}
        for module, value_range in ranges.items():
            if isinstance(module, torch.nn.Linear):
                self._layers[module] = _QuantizedLinear(module, value_range)
            else:
                # Query, key and value read the same input: one product of the three.
                fused = torch.nn.Linear(module.query.in_features, 3 * module.query.out_features)
                parts = (module.query, module.key, module.value)
                with torch.no_grad():
                    fused.weight.copy_(torch.cat([m.weight for m in parts]))
                    fused.bias.copy_(torch.cat([m.bias for m in parts]))
                self._layers[module] = _QuantizedLinear(fused, value_range)
        # The feed-forward product with the GELU writes its output straight in the
        # second product's uint8 input: no float32 intermediate, no quantizing pass.
        self._feeds = {
            layer.intermediate.dense: self._layer(layer.output.dense)
            for layer in model.encoder.layer
        }

    @staticmethod
    def calibrate(
        run: Callable[[Products], None], products: Products, model: torch.nn.Module
    ) -> Int8Linears:
        """Record every product's input range while ``run`` runs in float32.

        Parameters
        ----------
        run : callable
            Runs the float32 pass over :func:`calibration_texts` with the
            products it is given.
        products : Products
            The float32 products.
        model : transformers.BertModel
            The model whose layers ``run`` runs.
        """
        ranges: dict[torch.nn.Module, _Range] = {}

        class Recording:
            def qkv(self, attention, x):
                ranges.setdefault(attention, _Range()).update(x)
                return products.qkv(attention, x)

            def dense(self, module, x, **kwargs):
                ranges.setdefault(module, _Range()).update(x)
                return products.dense(module, x, **kwargs)

        run(Recording())
        return Int8Linears(ranges, model)

    def _layer(self, module: torch.nn.Module) -> _QuantizedLinear:
        layer = self._layers.get(module)
        if layer is None:
            raise RuntimeError(f"{module} was not seen in int8 calibration.")
        return layer

    def qkv(
        self, attention: torch.nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of ``x``, in one int8 product."""
        layer = self._layer(attention)
        return layer(layer.quantize(x)).chunk(3, dim=1)

    def dense(
        self,
        module: torch.nn.Linear,
        x: torch.Tensor,
        *,
        gelu: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``module(x)`` in int8, then the GELU or the residual added.

        Float32 out, except the feed-forward's first product with the GELU, whose
        uint8 output is the second product's input (``x`` of dtype uint8).
        """
        layer = self._layer(module)
        q = x if x.dtype == torch.uint8 else layer.quantize(x)
        into = self._feeds.get(module) if gelu else None
        return layer(q, gelu=gelu, residual=residual, into=into)


def calibrate_packed(
    packed: PackedBert | None, tokenizer: Any, *, token_types: bool, lower: bool, source: Path
) -> PackedBert:
    """The unpadded pass of ``packed``'s model with int8 products, calibrated in float32.

    Parameters
    ----------
    packed : PackedBert or None
        The float32 unpadded pass; ``None`` where the model does not run one.
    tokenizer : transformers.PreTrainedTokenizerFast
        Tokenizes :func:`calibration_texts`.
    token_types : bool
        Whether the model takes token type ids.
    lower : bool
        Whether texts are lower-cased before tokenizing (``do_lower_case``).
    source : Path
        The transformer's folder, named in errors.

    Raises
    ------
    ValueError
        If the model has no unpadded pass (not a plain BERT encoder on the CPU),
        or this torch lacks oneDNN's int8 operators.
    """
    if packed is None:
        raise ValueError(
            "dtype='int8' runs plain BERT encoders on the CPU only; the transformer in "
            f"{source} is not one there. Use dtype='float32' or 'bfloat16' for it."
        )
    if not int8_available():
        raise ValueError(
            f"dtype='int8' needs oneDNN's int8 operators, which torch {torch.__version__} "
            "here lacks; use dtype='float32'."
        )
    texts = [text.lower() for text in calibration_texts()] if lower else list(calibration_texts())
    model = packed.model
    tensors = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=int(model.config.max_position_embeddings),
        return_tensors="pt",
    )

    def run(products: Products) -> None:
        packed.products = products
        with torch.inference_mode():
            packed(
                tensors["input_ids"],
                tensors["attention_mask"],
                tensors.get("token_type_ids") if token_types else None,
            )

    try:
        int8 = Int8Linears.calibrate(run, Products(), model)
    finally:
        packed.products = Products()
    return PackedBert(model, int8)
