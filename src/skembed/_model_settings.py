"""A model's settings checked against an estimator's parameters when it is fitted."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._options import ROLES
from ._similarity_function import SimilarityFunction
from .encoder import EncoderLike, FolderSpec

__all__ = [
    "checked_max_seq_length",
    "checked_model_metric",
    "checked_prompt",
    "checked_truncate_dim",
    "truncated",
]


def checked_max_seq_length(given: int | None, encoder: EncoderLike, folder: Any) -> int:
    """The token limit in effect, refused if the model has fewer positions or none."""
    if given is not None and encoder.reads_whole_texts:
        raise ValueError(
            f"max_seq_length={given} does not apply to the model at {folder}: "
            "a StaticEmbedding reads whole texts. Leave max_seq_length=None."
        )
    max_seq_length = given or encoder.default_max_seq_length
    limit = encoder.max_position_embeddings
    if limit is not None and max_seq_length > limit:
        source = (
            f"max_seq_length={max_seq_length}"
            if given is not None
            else f"max_seq_length={max_seq_length} in "
            f"{encoder.spec.input_folder / 'sentence_bert_config.json'}"
        )
        raise ValueError(f"{source} exceeds the {limit} positions the model at {folder} supports.")
    return max_seq_length


def checked_truncate_dim(given: int | None, encoder: EncoderLike, folder: Any) -> int | None:
    """The column count in effect, refused if the model's embeddings are narrower."""
    truncate_dim = given or encoder.spec.truncate_dim
    if truncate_dim is not None and truncate_dim > encoder.embedding_dimension:
        source = (
            "truncate_dim"
            if given is not None
            else f"truncate_dim in {folder / 'config_sentence_transformers.json'}"
        )
        raise ValueError(
            f"{source}={truncate_dim} exceeds the {encoder.embedding_dimension} embedding "
            f"dimensions of the model at {folder}."
        )
    return truncate_dim


def checked_prompt(
    prompt: str | None,
    prompt_name: str | None,
    prompts: dict | None,
    role: str | None,
    spec: FolderSpec,
) -> tuple[str | None, dict[str, str]]:
    """The prompt in effect (``prompt``, else the named, the role's or the default prompt).

    Returns it with every prompt by name (``prompts_``).
    """
    if prompt is not None and prompt_name is not None:
        raise ValueError(
            f"Give prompt or prompt_name, not both (got prompt={prompt!r}, "
            f"prompt_name={prompt_name!r})."
        )
    given = prompts or {}
    bad = {k: v for k, v in given.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ValueError(f"prompts must map prompt names (str) to prompts (str); got {bad!r}.")
    # As the reference: "query" and "document" always exist (empty unless set), so a role
    # never falls back to the default prompt; the parameter overrides the saved prompts.
    all_prompts = {**dict.fromkeys(ROLES, ""), **spec.prompts, **given}
    if prompt is not None:
        return prompt, all_prompts
    # Tested against None, not truthiness: prompt_name="" names no prompt and is refused.
    if prompt_name is None:
        prompt_name = role or spec.default_prompt_name
    if prompt_name is not None and prompt_name not in all_prompts:
        raise ValueError(
            f"prompt_name={prompt_name!r} is not among the model's prompts {sorted(all_prompts)}."
        )
    # An empty prompt is no prompt: one cache key for both.
    return all_prompts.get(prompt_name) or None, all_prompts


def truncated(embeddings: np.ndarray, truncate_dim: int, normalize: bool) -> np.ndarray:
    """The first ``truncate_dim`` columns, as a new array, L2-normalised if asked."""
    kept = embeddings[:, :truncate_dim].copy()  # the cache's rows may be read-only
    if not normalize:
        return kept
    # The reference's normalisation (torch, float32), so that the rows match it bit for bit.
    return torch.nn.functional.normalize(torch.from_numpy(kept), p=2.0, dim=1).numpy()


def checked_model_metric(spec: FolderSpec, folder: Any) -> str | None:
    """The model's saved ``similarity_fn_name``, refused with its file if it is unknown."""
    if spec.similarity_fn_name is not None:
        try:
            SimilarityFunction(spec.similarity_fn_name)
        except ValueError as exc:
            raise ValueError(
                f"{folder / 'config_sentence_transformers.json'}: field 'similarity_fn_name': {exc}"
            ) from None
    return spec.similarity_fn_name
