"""Texts longer than the model's window: cut into windows of tokens, then combined.

A text is tokenized once, whole (no truncation). Its tokens past the leading
special tokens and the prompt (the *body*) are cut into spans; each window is the
text's own leading special tokens and prompt tokens, one span of the body, and the
text's trailing special tokens, so that it holds at most ``window`` tokens and is
exactly what the model sees for a short text. The windows of many texts go through
the model together, as ordinary rows; :func:`combine_windows` then makes one
embedding per text. A text that fits in one window is that window, unchanged: it
gets the same embedding as without chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._options import CHUNK_POOLINGS

__all__ = [
    "CHUNK_POOLINGS",
    "Chunking",
    "WindowEmbeddings",
    "Windows",
    "combine_windows",
    "cut_windows",
]


@dataclass(frozen=True)
class Chunking:
    """How texts longer than one window are encoded (``EncodeSettings.chunking``).

    Parameters
    ----------
    window : int
        Most tokens per window, special tokens and prompt included.
    stride : int, default=0
        Tokens of the text that two consecutive windows share.
    pooling : {"mean", "max", "first"}, default="mean"
        How the windows' embeddings make the text's (see :data:`CHUNK_POOLINGS`).
    """

    window: int
    stride: int = 0
    pooling: str = "mean"


@dataclass(frozen=True)
class Window:
    """The tokens of one window, as a tokenizer encoding gives them."""

    ids: np.ndarray
    type_ids: np.ndarray


@dataclass(frozen=True)
class Windows:
    """The windows of some texts, the texts' windows consecutive and in order.

    Attributes
    ----------
    encodings : list
        One per window: a tokenizer encoding, or a :class:`Window`.
    text : ndarray of int64
        The text (position in the input) of each window.
    tokens : ndarray of int64
        The text's tokens each window holds (prompt and special tokens not counted).
    """

    encodings: list
    text: np.ndarray
    tokens: np.ndarray


@dataclass(frozen=True)
class WindowEmbeddings:
    """One embedding per window of some texts, each text's windows consecutive.

    Attributes
    ----------
    embeddings : ndarray of shape (n_windows, d), float32
    text : ndarray of shape (n_windows,), int64
        The text (position in the input) each window comes from, non-decreasing.
    tokens : ndarray of shape (n_windows,), int64
        The text's tokens each window holds (prompt and special tokens not counted).
    """

    embeddings: np.ndarray
    text: np.ndarray
    tokens: np.ndarray


def cut_windows(encodings: list, prompt_tokens: int, chunking: Chunking) -> Windows:
    """The windows of whole-text encodings.

    Parameters
    ----------
    encodings : list of tokenizers.Encoding
        Each text (prompt included) tokenized whole, with special tokens.
    prompt_tokens : int
        Tokens of the prompt, special tokens not counted (0 without a prompt);
        they come first after the leading special tokens.
    chunking : Chunking

    Returns
    -------
    Windows

    Raises
    ------
    ValueError
        If a window has no room for ``stride + 1`` tokens of text beside the
        prompt and the special tokens.
    """
    out: list = []
    texts: list[int] = []
    tokens: list[int] = []
    for position, encoding in enumerate(encodings):
        special = np.asarray(encoding.special_tokens_mask, dtype=bool)
        plain = np.flatnonzero(~special)
        head = int(plain[0]) + prompt_tokens if len(plain) else len(special)
        end = int(plain[-1]) + 1 if len(plain) else len(special)
        body = max(end - head, 0)
        if len(special) <= chunking.window:
            out.append(encoding)
            texts.append(position)
            tokens.append(body)
            continue
        room = chunking.window - head - (len(special) - end)
        if room <= chunking.stride:
            raise ValueError(
                f"A window of {chunking.window} tokens holds {head} tokens of prompt and special "
                f"tokens and {len(special) - end} more special tokens, which leaves no room for "
                f"stride={chunking.stride} + 1 tokens of text; use a larger window or a smaller "
                "stride or prompt."
            )
        ids = np.asarray(encoding.ids, dtype=np.int64)
        types = np.asarray(encoding.type_ids, dtype=np.int64)
        for start in range(head, end, room - chunking.stride):
            stop = min(start + room, end)
            keep = np.r_[0:head, start:stop, end : len(ids)]
            out.append(Window(ids[keep], types[keep]))
            texts.append(position)
            tokens.append(stop - start)
            if stop == end:
                break
    return Windows(out, np.asarray(texts, dtype=np.int64), np.asarray(tokens, dtype=np.int64))


def combine_windows(
    embeddings: np.ndarray, text: np.ndarray, tokens: np.ndarray, n_texts: int, pooling: str
) -> np.ndarray:
    """One embedding per text from the embeddings of its windows.

    Parameters
    ----------
    embeddings : ndarray of shape (n_windows, d)
        The window embeddings, each text's windows consecutive.
    text : ndarray of shape (n_windows,)
        The text of each window, from 0 to ``n_texts - 1``, non-decreasing, every
        text present.
    tokens : ndarray of shape (n_windows,)
        The text's tokens each window holds: the weights of ``"mean"``.
    n_texts : int
    pooling : {"mean", "max", "first"}

    Returns
    -------
    ndarray of shape (n_texts, d), float32
        A text of one window gets that window's embedding, unchanged.
    """
    starts = np.searchsorted(text, np.arange(n_texts))
    if pooling == "first" or len(embeddings) == n_texts:
        return np.ascontiguousarray(embeddings[starts], dtype=np.float32)
    if pooling == "max":
        return np.maximum.reduceat(embeddings, starts, axis=0).astype(np.float32, copy=False)
    # In float64 a text of one window gets its embedding back exactly: e * w / w == e for a
    # float32 e and an integer w (an empty text's window weighs 1).
    weights = np.maximum(tokens, 1).astype(np.float64)
    total = np.add.reduceat(embeddings * weights[:, None], starts, axis=0)
    return (total / np.add.reduceat(weights, starts)[:, None]).astype(np.float32)
