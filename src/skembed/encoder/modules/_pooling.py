"""Pooling: token embeddings of a padded batch -> one vector per text.

One function per mode, in one table (``POOLERS``); a new pooling mode is a new entry.
The :class:`Pooling` module reads the modes from its config, old style (boolean
keys) or new (``pooling_mode``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._config import field, read_json, write_json
from ._base import Features, LoadContext, Module, register_module

__all__ = ["POOLERS", "POOLING_MODES", "Pooling", "pool"]


def _first_real_positions(mask: torch.Tensor) -> torch.Tensor:
    # With left padding the first real token is not at position 0.
    return mask.to(torch.int32).argmax(dim=1)


def _without_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    start = (_first_real_positions(mask) + prompt_length).unsqueeze(1)
    return mask.masked_fill(positions < start, 0)


def _weighted_sum(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of the token rows of each text with per-token weights, as one batched product.

    ``weights`` has shape (batch, seq); the product accumulates in float32 or wider.
    """
    acc = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
    return torch.bmm(weights.to(acc).unsqueeze(1), tokens.to(acc)).squeeze(1)


def _cls(tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    index = _first_real_positions(mask)
    return tokens[torch.arange(len(index), device=tokens.device), index]


def _max(tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    return tokens.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def _mean(tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    count = torch.clamp(mask.sum(dim=1, dtype=torch.float32), min=1e-9).unsqueeze(1)
    return (_weighted_sum(tokens, mask) / count).to(tokens.dtype)


def _mean_sqrt_len(
    tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor
) -> torch.Tensor:
    count = torch.clamp(mask.sum(dim=1, dtype=torch.float32), min=1e-9).unsqueeze(1)
    return (_weighted_sum(tokens, mask) / torch.sqrt(count)).to(tokens.dtype)


def _weightedmean(
    tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor
) -> torch.Tensor:
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=torch.float32)
    # Position weights count from the first real token, also under left padding.
    positions = positions.unsqueeze(0) - _first_real_positions(full_mask).unsqueeze(1)
    weights = mask.to(torch.float32) * positions
    total = _weighted_sum(tokens, weights)
    return (total / torch.clamp(weights.sum(dim=1, keepdim=True), min=1e-9)).to(tokens.dtype)


def _lasttoken(tokens: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor) -> torch.Tensor:
    seq_len = mask.shape[1]
    found, from_end = mask.flip(1).max(dim=1)
    from_end = torch.where(found == 0, seq_len - 1, from_end)
    index = seq_len - from_end - 1
    masked = tokens * mask.unsqueeze(-1).to(tokens.dtype)
    return masked[torch.arange(len(index), device=tokens.device), index]


Pooler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Each takes (token embeddings, mask without the prompt, full attention mask).
POOLERS: dict[str, Pooler] = {
    "cls": _cls,
    "max": _max,
    "mean": _mean,
    "mean_sqrt_len_tokens": _mean_sqrt_len,
    "weightedmean": _weightedmean,
    "lasttoken": _lasttoken,
}
POOLING_MODES = tuple(POOLERS)


def pool(
    token_embeddings: torch.Tensor,
    attention_mask: torch.Tensor,
    modes: tuple[str, ...],
    prompt_length: int = 0,
) -> torch.Tensor:
    """Pool a batch of token embeddings into sentence embeddings.

    Parameters
    ----------
    token_embeddings : Tensor of shape (batch, seq, hidden)
    attention_mask : Tensor of shape (batch, seq)
        1 for real tokens, 0 for padding.
    modes : tuple of str
        Keys of :data:`POOLERS`, concatenated in the given order.
    prompt_length : int, default=0
        Number of leading prompt tokens to leave out of the pooling.

    Returns
    -------
    Tensor of shape (batch, hidden * len(modes))

    Raises
    ------
    ValueError
        For a mode that is not in :data:`POOLERS`.
    """
    mask = _without_prompt(attention_mask, prompt_length) if prompt_length else attention_mask
    outputs = []
    for mode in modes:
        pooler = POOLERS.get(mode)
        if pooler is None:
            raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {list(POOLERS)}.")
        outputs.append(pooler(token_embeddings, mask, attention_mask))
    return torch.cat(outputs, dim=-1)


# Legacy boolean keys of 1_Pooling/config.json, in the order the reference concatenates them.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@register_module
class Pooling(Module):
    """Token embeddings -> one sentence embedding, the modes' outputs concatenated.

    Parameters
    ----------
    dimension : int
        Size of the token embeddings.
    modes : tuple of str, default=("mean",)
        Keys of :data:`POOLERS`.
    include_prompt : bool, default=True
        Whether prompt tokens count in the pooling.
    """

    type_name = "Pooling"
    takes = "tokens"
    gives = "sentence"

    def __init__(
        self, dimension: int, modes: tuple[str, ...] = ("mean",), include_prompt: bool = True
    ) -> None:
        super().__init__()
        self.dimension = dimension
        self.modes = tuple(modes)
        self.include_prompt = include_prompt

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Pooling:
        """Read the modes; keys that older files lack take their defaults, no mode means mean."""
        config_path = folder / "config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        mode = field(config, config_path, "pooling_mode", (str, list, type(None)), None)
        if mode is None:
            modes = tuple(
                name
                for key, name in _LEGACY_POOLING_KEYS.items()
                if field(config, config_path, key, (bool,), False)
            )
        else:
            modes = (mode,) if isinstance(mode, str) else tuple(mode)
        modes = modes or ("mean",)
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown:
            raise ValueError(
                f"{config_path}: unknown pooling mode(s) {unknown}; "
                f"expected any of {list(POOLING_MODES)}."
            )
        include_prompt = field(config, config_path, "include_prompt", (bool,), True)
        assert context.dimension is not None
        return cls(context.dimension, modes, include_prompt)

    def save(self, folder: Path) -> None:
        config: dict[str, Any] = {"word_embedding_dimension": self.dimension}
        config.update({key: name in self.modes for key, name in _LEGACY_POOLING_KEYS.items()})
        config["include_prompt"] = self.include_prompt
        if list(self.modes) != [m for m in _LEGACY_POOLING_KEYS.values() if m in self.modes]:
            # The boolean keys fix the order of concatenation; recent releases read this key
            # first, and older ones could not express another order anyway.
            config["pooling_mode"] = list(self.modes)
        write_json(folder / "config.json", config)

    @property
    def output_dimension(self) -> int:
        return self.dimension * len(self.modes)

    def forward(self, features: Features) -> Features:
        prompt_length = 0 if self.include_prompt else features.get("prompt_length", 0)
        features["sentence_embedding"] = pool(
            features["token_embeddings"], features["attention_mask"], self.modes, prompt_length
        ).float()
        return features
