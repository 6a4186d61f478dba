"""The StaticEmbedding input module: the mean of per-token embeddings, no transformer."""

from __future__ import annotations

import copy
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from ._base import Features, LoadContext, Module, load_weights, register_module

__all__ = ["StaticEmbedding"]


@register_module
class StaticEmbedding(Module):
    """The mean of the embeddings of a text's tokens; an empty text gives zeros.

    Its folder holds ``tokenizer.json`` and the table (``embedding.weight``, or a
    model2vec ``embeddings`` table with an optional ``mapping`` and per-token
    ``weights``).

    Parameters
    ----------
    table : Tensor of shape (vocabulary, dimension)
    tokenizer_file : Path
        The ``tokenizer.json`` the texts are tokenized with.
    """

    type_name = "StaticEmbedding"
    takes = "text"
    gives = "sentence"
    # The reference tokenizes static inputs as their tokenizer.json says: no special tokens,
    # no token limit.
    add_special_tokens = False
    token_types = False
    unpadded = False
    max_position_embeddings = None
    default_max_seq_length = sys.maxsize

    def __init__(self, table: torch.Tensor, tokenizer_file: Path) -> None:
        super().__init__()
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        self._raw_tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The wrapper gives the padding and special-token facts the batching code reads.
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_file(str(tokenizer_file))
        )
        self.embedding = torch.nn.EmbeddingBag.from_pretrained(
            table.float(), mode="mean", freeze=False
        )
        self._backend: Any = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> StaticEmbedding:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise OSError(f"No tokenizer.json in {folder}; a StaticEmbedding needs one.")
        weights = load_weights(folder)
        if "embedding.weight" in weights:
            table = weights["embedding.weight"]
        elif "embeddings" in weights:
            table = _fold_model2vec(weights)
        else:
            raise ValueError(
                f"The weights in {folder} hold {sorted(weights)}; a StaticEmbedding needs "
                "'embedding.weight' (or a model2vec 'embeddings' table)."
            )
        from tokenizers import Tokenizer

        # Token ids need not be contiguous: the table must cover the largest.
        vocabulary = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
        size = max(vocabulary.values(), default=-1) + 1
        if table.ndim != 2 or table.shape[0] < size:
            raise ValueError(
                f"The embedding table in {folder} has shape {tuple(table.shape)}; its tokenizer "
                f"makes token ids up to {size - 1}, so it needs a 2-D table with at "
                f"least {size} rows."
            )
        module = cls(table, path)
        return module

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        weights = {"embedding.weight": self.embedding.weight.detach().cpu().contiguous()}
        save_file(weights, folder / "model.safetensors")
        self._raw_tokenizer.save(str(folder / "tokenizer.json"))

    def with_max_seq_length(self, limit: int | None) -> StaticEmbedding:
        """Itself: a static embedding reads whole texts, whatever the limit."""
        return self

    @property
    def output_dimension(self) -> int:
        return self.embedding.embedding_dim

    def backend(self, max_length: int | None) -> Any:
        """The Rust tokenizer as its file says (no limit is added)."""
        with self._lock:
            if self._backend is None:
                backend = copy.deepcopy(self._raw_tokenizer)
                backend.no_padding()
                self._backend = backend
            return self._backend

    def forward(self, features: Features) -> Features:
        keep = features["attention_mask"].bool()
        lengths = keep.sum(dim=1)
        offsets = torch.cumsum(lengths, dim=0) - lengths
        features["sentence_embedding"] = self.embedding(features["input_ids"][keep], offsets)
        return features

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"], state["_backend"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _fold_model2vec(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per token id from a model2vec table, token mapping and per-token weights."""
    table = weights["embeddings"]
    if "mapping" in weights:
        table = table[weights["mapping"].long()]
    if "weights" in weights:
        table = table.float() * weights["weights"].float()[:, None]
    return table
