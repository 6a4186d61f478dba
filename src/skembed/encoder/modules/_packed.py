"""The forward pass of a BERT encoder on real tokens only, with no padding.

A padded batch spends the transformer's matrix products on padding too: on STSb
sentences sorted into batches of 32, as the reference does, 22% of the tokens are
padding. Here the real tokens of a batch are packed into one (tokens, hidden)
matrix, so every matrix product of every layer runs on real tokens only and on
many more rows at once. Attention, the one step that mixes tokens, runs per group
of texts of equal length (consecutive once a batch is sorted by length), so no
attention mask and no padded copy is needed. On a GPU (``varlen=True``) it runs as
one variable-length call per layer instead: the packed rows viewed as a jagged
nested tensor, which PyTorch's scaled-dot-product attention runs with its
variable-length kernels (flash attention in float16 and bfloat16).

The arithmetic is the transformer's own, read from its modules; only the order of
some additions differs from the padded pass (differences near 1e-7 in float32,
tested against it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import torch

from ._kernels import linear

__all__ = ["PackedBert", "Products", "padded_rows", "varlen_attention_runs_on"]

_ROW_STEP = 512


def padded_rows(n: int) -> int:
    """Rows of the packed matrix for ``n`` tokens.

    A multiple of 512 from 512 tokens on, the next power of two (at least 64)
    below: at most 511 padding rows, and few distinct shapes (a budget of 4,096
    tokens gives 11).
    """
    if n > _ROW_STEP:
        return -(-n // _ROW_STEP) * _ROW_STEP
    return max(64, 1 << max(n - 1, 0).bit_length())


class Products:
    """The float32 (or bfloat16) matrix products of the packed pass.

    :class:`PackedBert` asks these for every linear layer, so that another
    precision (:class:`~skembed.encoder._int8.Int8Linears`) can take their place.
    """

    def qkv(
        self, attention: torch.nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of ``x`` for a BERT self-attention module."""
        return tuple(
            linear(x, m.weight, m.bias) for m in (attention.query, attention.key, attention.value)
        )

    def dense(
        self,
        module: torch.nn.Linear,
        x: torch.Tensor,
        *,
        gelu: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``module(x)``, then the GELU or the residual added (see :func:`linear`)."""
        return linear(x, module.weight, module.bias, gelu=gelu, residual=residual)


class PackedBert:
    """Unpadded forward pass of a Hugging Face ``BertModel`` in inference.

    Parameters
    ----------
    model : transformers.BertModel
        In eval mode; see :meth:`supports`.
    products : Products, optional
        The linear layers' products; float32 (in the model's dtype) by default.
    varlen : bool, default=False
        Attention as one variable-length call per layer (a jagged nested
        tensor) rather than one call per run of equal-length texts: fewer,
        larger kernels, for a GPU. See :func:`varlen_attention_runs_on`.
    """

    def __init__(
        self, model: torch.nn.Module, products: Products | None = None, *, varlen: bool = False
    ) -> None:
        self.model = model
        self.products = Products() if products is None else products
        self.varlen = varlen
        config = model.config
        self.heads = int(config.num_attention_heads)
        # The exact GELU is fused into its matrix product; another activation runs as is.
        self.fused_gelu = config.hidden_act == "gelu"

    @staticmethod
    def supports(model: torch.nn.Module) -> bool:
        """Whether ``model`` is a plain BERT encoder whose forward pass this reproduces.

        Anything else (other architectures, decoders, cross-attention, chunked
        feed-forward, hidden layers asked for) keeps the model's own forward pass.
        """
        config = getattr(model, "config", None)
        return (
            type(model).__name__ == "BertModel"
            and getattr(config, "model_type", None) == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False)
            and not getattr(config, "add_cross_attention", False)
            and not getattr(config, "chunk_size_feed_forward", 0)
            and not getattr(config, "output_hidden_states", False)
            and not model.training
        )

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        token_count: int | None = None,
    ) -> torch.Tensor:
        """Last hidden states of a padded batch, zero at padded positions.

        Parameters
        ----------
        input_ids, attention_mask : Tensor of shape (batch, seq)
        token_type_ids : Tensor of shape (batch, seq), optional
        token_count : int, optional
            ``attention_mask.sum()``, when the caller counted it before the
            batch reached the device: the pass then never waits for the device
            to report a count (on a GPU such a wait stalls the next launches).

        Returns
        -------
        Tensor of shape (batch, seq, hidden)
        """
        batch, width = input_ids.shape
        flat_mask = attention_mask.reshape(-1)
        if token_count is None:
            real = flat_mask.nonzero().squeeze(1)
        else:
            real = torch.nonzero_static(flat_mask, size=token_count).squeeze(1)
        x = self._embed(input_ids, token_type_ids, real, width)
        n = len(real)
        if self.varlen:
            lengths = attention_mask.sum(dim=1)
            offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
            attend = partial(_varlen_attention, offsets=offsets, longest=width)
        else:
            attend = partial(_attention_by_runs, runs=_equal_length_runs(attention_mask.sum(1)))
        # oneDNN compiles and keeps a kernel for every shape it meets (about 0.6 MiB and
        # 2 ms each, measured): padding rows keep the shapes few. GPU libraries need none.
        rows = padded_rows(n) if x.device.type == "cpu" else n
        if rows > n:
            x = torch.cat([x, x.new_zeros(rows - n, x.shape[1])])
        for layer in self.model.encoder.layer:
            x = self._layer(layer, x, attend, n)
        out = x.new_zeros(batch * width, x.shape[1])
        out[real] = x[:n]
        return out.view(batch, width, -1)

    def _embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        real: torch.Tensor,
        width: int,
    ) -> torch.Tensor:
        embeddings = self.model.embeddings
        # Positions count from the first column, padding included, as in the padded pass.
        positions = torch.arange(width, device=real.device).repeat(input_ids.shape[0])[real]
        types = (
            token_type_ids.reshape(-1)[real]
            if token_type_ids is not None
            else torch.zeros_like(positions)
        )
        x = embeddings.word_embeddings(input_ids.reshape(-1)[real])
        x = x + embeddings.token_type_embeddings(types)
        x = x + embeddings.position_embeddings(positions)
        return embeddings.LayerNorm(x)

    def _layer(
        self, layer: torch.nn.Module, x: torch.Tensor, attend: Attention, n: int
    ) -> torch.Tensor:
        """One transformer layer on packed rows, of which the first ``n`` are tokens."""
        attention = layer.attention
        products = self.products
        q, k, v = products.qkv(attention.self, x)
        context = torch.empty_like(q)
        context[n:] = 0  # padding rows attend to nothing
        attend(q[:n], k[:n], v[:n], context[:n], self.heads)
        output = attention.output
        x = output.LayerNorm(products.dense(output.dense, context, residual=x))
        intermediate = layer.intermediate
        if self.fused_gelu:
            hidden = products.dense(intermediate.dense, x, gelu=True)
        else:
            hidden = intermediate.intermediate_act_fn(products.dense(intermediate.dense, x))
        output = layer.output
        return output.LayerNorm(products.dense(output.dense, hidden, residual=x))


# Attention of packed (tokens, hidden) query, key and value rows into ``out``, per head.
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], None]


def _attention_by_runs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    heads: int,
    *,
    runs: list[tuple[int, int, int]],
) -> None:
    """One dense attention call per run of equal-length texts (no mask needed)."""
    head_size = q.shape[1] // heads
    for start, length, count in runs:
        span = slice(start, start + length * count)
        shape = (count, length, heads, head_size)
        scores = torch.nn.functional.scaled_dot_product_attention(
            *(t[span].view(shape).transpose(1, 2) for t in (q, k, v)), scale=head_size**-0.5
        )
        out[span].view(shape).copy_(scores.transpose(1, 2))


def _varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    heads: int,
    *,
    offsets: torch.Tensor,
    longest: int,
) -> None:
    """One variable-length attention call: the texts as a jagged nested tensor."""
    head_size = q.shape[1] // heads

    def jagged(t: torch.Tensor) -> torch.Tensor:
        # (tokens, heads, head size) -> (texts, heads, ragged length, head size)
        values = t.reshape(-1, heads, head_size)
        nested = torch.nested.nested_tensor_from_jagged(values, offsets, max_seqlen=longest)
        return nested.transpose(1, 2)

    scores = torch.nn.functional.scaled_dot_product_attention(
        jagged(q), jagged(k), jagged(v), scale=head_size**-0.5
    )
    out.copy_(scores.transpose(1, 2).values().reshape(out.shape))


@cache
def varlen_attention_runs_on(device: torch.device, dtype: torch.dtype, head_size: int = 32) -> bool:
    """Whether jagged-tensor attention runs on ``device`` in ``dtype`` (tried once, cached).

    Which kernels serve it depends on the GPU, the dtype, the head size and the
    torch build: a tiny call answers, and the unpadded pass is used only where it
    does.
    """
    x = torch.ones(5, 2 * head_size, device=device, dtype=dtype)
    out = torch.empty_like(x)
    offsets = torch.tensor([0, 2, 5], device=device)
    try:
        _varlen_attention(x, x, x, out, 2, offsets=offsets, longest=3)
    except (RuntimeError, NotImplementedError):
        return False
    return bool(torch.isfinite(out).all())


def _equal_length_runs(lengths: torch.Tensor) -> list[tuple[int, int, int]]:
    """(first packed token, length, number of texts) of each run of equal lengths."""
    values, counts = torch.unique_consecutive(lengths, return_counts=True)
    runs, start = [], 0
    for length, count in zip(values.tolist(), counts.tolist(), strict=True):
        if length:
            runs.append((start, length, count))
        start += length * count
    return runs
