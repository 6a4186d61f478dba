"""Pooling: token embeddings of a padded batch -> one vector per text."""

from __future__ import annotations

import torch

__all__ = ["pool"]


def _first_real_positions(mask: torch.Tensor) -> torch.Tensor:
    # With left padding the first real token is not at position 0.
    return mask.to(torch.int32).argmax(dim=1)


def _without_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    start = (_first_real_positions(mask) + prompt_length).unsqueeze(1)
    return mask.masked_fill(positions < start, 0)


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
        Pooling modes, concatenated in this order: ``cls``, ``max``, ``mean``,
        ``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken``.
    prompt_length : int, default=0
        Number of leading prompt tokens to leave out of the pooling.

    Returns
    -------
    Tensor of shape (batch, hidden * len(modes))
    """
    full_mask = attention_mask
    mask = _without_prompt(attention_mask, prompt_length) if prompt_length else attention_mask
    dtype = token_embeddings.dtype
    # Half-precision sums lose digits over long texts; accumulate in float32.
    acc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    outputs = []
    for mode in modes:
        if mode == "cls":
            index = _first_real_positions(mask)
            outputs.append(token_embeddings[torch.arange(len(index)), index])
        elif mode == "max":
            masked = token_embeddings.masked_fill(mask.unsqueeze(-1) == 0, float("-inf"))
            outputs.append(masked.max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            weights = mask.unsqueeze(-1).to(dtype)
            total = (token_embeddings * weights).sum(dim=1, dtype=acc_dtype)
            count = torch.clamp(weights.sum(dim=1, dtype=acc_dtype), min=1e-9)
            denominator = count if mode == "mean" else torch.sqrt(count)
            outputs.append((total / denominator).to(dtype))
        elif mode == "weightedmean":
            positions = torch.arange(
                1, token_embeddings.shape[1] + 1, device=token_embeddings.device, dtype=acc_dtype
            ).view(1, -1, 1)
            # Position weights count from the first real token, also under left padding.
            positions = positions - _first_real_positions(full_mask).view(-1, 1, 1)
            weights = mask.unsqueeze(-1).to(acc_dtype) * positions
            total = (token_embeddings * weights).sum(dim=1)
            outputs.append((total / torch.clamp(weights.sum(dim=1), min=1e-9)).to(dtype))
        elif mode == "lasttoken":
            seq_len = mask.shape[1]
            found, from_end = mask.flip(1).max(dim=1)
            from_end = torch.where(found == 0, seq_len - 1, from_end)
            index = seq_len - from_end - 1
            masked = token_embeddings * mask.unsqueeze(-1).to(dtype)
            outputs.append(masked[torch.arange(len(index)), index])
        else:
            raise ValueError(f"Unknown pooling mode {mode!r}.")
    return torch.cat(outputs, dim=-1)
