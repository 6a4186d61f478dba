"""Encoding through the caches: each distinct text encoded at most once per model and settings."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..encoder import EncodeResult, EncoderLike, EncodeSettings, precision_key
from . import _store
from ._memory import CacheHits, EmbeddingCache, process_cache
from ._store import _HOST, DiskEmbeddingStore

__all__ = ["encode_cached", "namespace_for"]


def namespace_for(encoder: EncoderLike, settings: EncodeSettings) -> str:
    """Hash of everything that determines an embedding besides the text.

    The model's content (fingerprint), where and in which precision it runs
    (for int8, with its calibration: :func:`~skembed.encoder.precision_key`),
    and every field of ``settings``: an option added to
    :class:`~skembed.encoder.EncodeSettings` enters the key by itself.
    """
    if settings.max_seq_length is None:
        # The default and the same limit given explicitly give the same embeddings.
        settings = replace(settings, max_seq_length=encoder.default_max_seq_length)
    fields = asdict(settings)
    if settings.chunking is None:
        # Truncating, the key is the one of the stores written before chunking existed.
        del fields["chunking"]
    payload = {
        "model": encoder.fingerprint,
        "device": encoder.device.type,
        "dtype": precision_key(encoder.dtype),
        "settings": fields,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def encode_cached(
    encoder: EncoderLike,
    texts: Sequence[str],
    settings: EncodeSettings | None = None,
    *,
    store: DiskEmbeddingStore | None = None,
    show_progress_bar: bool = False,
    **run_options: Any,
) -> EncodeResult:
    """Encode texts, each distinct text at most once, through the caches.

    Looks in the in-process cache, then in ``store``; encodes the rest with
    ``encoder`` and records them in both. With the in-process cache off
    (limit 0) it is not consulted at all.

    Parameters
    ----------
    encoder : Encoder or EncoderGroup
        The loaded model.
    texts : sequence of str
        The texts, duplicates allowed.
    settings : EncodeSettings, optional
        Options that change an embedding; all of them are part of the cache key.
    store : DiskEmbeddingStore, optional
        The persistent store, if any.
    show_progress_bar : bool, default=False
        Show a tqdm bar on stderr that counts the input texts, those found in a
        cache and repeats included, so that it ends at ``len(texts)``.
    **run_options
        ``batch_size`` and ``max_batch_tokens`` of :meth:`Encoder.encode`:
        how the work runs, not what it computes.

    Returns
    -------
    EncodeResult
        Rows in the order of ``texts``.
    """
    settings = settings or EncodeSettings()
    namespace = namespace_for(encoder, settings)
    texts = texts if isinstance(texts, list) else list(texts)
    cache = process_cache()
    caching = cache.max_bytes > 0
    # One dictionary lookup per input text; repeats are only merged among the texts the
    # in-process cache does not hold, so a fully cached call does no per-text work beyond it.
    hits = cache.lookup(namespace, texts) if caching else None
    todo = None if hits is None else np.flatnonzero(~hits.found)
    if todo is not None and len(todo) == len(texts):
        todo = None  # nothing found: as with the cache off
    with tqdm(total=len(texts), desc="Encoding", unit="text", disable=not show_progress_bar) as bar:
        if todo is not None and not len(todo):
            bar.update(len(texts))
            return _from_cache(hits, len(texts), encoder.embedding_dimension)
        todo_texts = texts if todo is None else [texts[i] for i in todo]
        bar.update(len(texts) - len(todo_texts))  # those the in-process cache holds
        found = _encode_unique(
            encoder,
            namespace,
            todo_texts,
            settings,
            store=store,
            cache=cache if caching else None,
            bar=bar if show_progress_bar else None,
            run_options=run_options,
        )
    if todo is None:
        return found
    result = _from_cache(hits, len(texts), encoder.embedding_dimension)
    result.embeddings[todo], result.truncated[todo] = found.embeddings, found.truncated
    return result


def _from_cache(hits: CacheHits, n: int, dimension: int) -> EncodeResult:
    """A new output of ``n`` rows holding the rows ``hits`` found (the others unset)."""
    embeddings = np.empty((n, dimension), dtype=np.float32)
    truncated = np.zeros(n, dtype=bool)
    hits.gather(embeddings, truncated)
    return EncodeResult(embeddings, truncated)


def _encode_unique(
    encoder: EncoderLike,
    namespace: str,
    texts: list[str],
    settings: EncodeSettings,
    *,
    store: DiskEmbeddingStore | None,
    cache: EmbeddingCache | None,
    bar: Any,
    run_options: dict[str, Any],
) -> EncodeResult:
    """Embeddings of ``texts`` (repeats allowed) from ``store`` or the encoder.

    Each distinct text is encoded at most once; what is encoded or read from the
    store goes into ``cache``. The result is the caller's own (writable) arrays.
    """
    unique = list(dict.fromkeys(texts))
    inverse = None
    if len(unique) != len(texts):
        position = {text: i for i, text in enumerate(unique)}
        inverse = np.fromiter(map(position.__getitem__, texts), dtype=np.int64, count=len(texts))
    # Positions in `unique` of the texts still to find, and those texts.
    pending = np.arange(len(unique))
    missing = unique
    disk = None
    if missing and store is not None:
        from_disk = store.get(namespace, missing, encoder.embedding_dimension)
        if from_disk:
            on_disk = np.fromiter(map(from_disk.__contains__, missing), bool, len(missing))
            disk_texts = [missing[i] for i in np.flatnonzero(on_disk)]
            disk = (
                pending[on_disk],
                np.stack([from_disk[text][0] for text in disk_texts]),
                np.array([from_disk[text][1] for text in disk_texts]),
            )
            if cache is not None:
                cache.put(namespace, disk_texts, disk[1], disk[2])
            pending, missing = pending[~on_disk], [missing[i] for i in np.flatnonzero(~on_disk)]
    progress = None
    if bar is not None:
        # Each unique text stands for all its repeats in the input.
        repeats = (
            np.ones(len(unique), dtype=np.int64)
            if inverse is None
            else np.bincount(inverse, minlength=len(unique))
        )
        bar.update(len(texts) - int(repeats[pending].sum()))

        def progress(rows: np.ndarray) -> None:
            bar.update(int(repeats[pending[rows]].sum()))

    result = None
    if missing and store is not None:
        result = _encode_shared(
            encoder, namespace, missing, settings, store, progress=progress, run_options=run_options
        )
    elif missing:
        result = encoder.encode(missing, settings, progress=progress, **run_options)
    if result is not None and cache is not None:
        cache.put(namespace, missing, result.embeddings, result.truncated)
    if result is not None and len(missing) == len(unique):
        # Nothing came from the store: the encoder's output is already in order. If the cache
        # kept it as its block (it made it read-only), the caller gets its own copy, made by
        # the gather of repeats when there is one.
        embeddings, truncated = result.embeddings, result.truncated
        if inverse is None and not embeddings.flags.writeable:
            embeddings, truncated = embeddings.copy(), truncated.copy()
    else:
        embeddings = np.empty((len(unique), encoder.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(unique), dtype=bool)
        encoded = None if result is None else (pending, result.embeddings, result.truncated)
        for part in (disk, encoded):
            if part is not None:
                rows, vectors, cuts = part
                embeddings[rows], truncated[rows] = vectors, cuts
    if inverse is not None:
        embeddings, truncated = embeddings[inverse], truncated[inverse]
    return EncodeResult(embeddings, truncated)


# How long a process waiting for texts that another one is encoding sleeps between two looks
# at the store: short at first (a few texts), longer for a long wait.
_FIRST_POLL_SECONDS = 0.02
_LAST_POLL_SECONDS = 0.5


def _encode_shared(
    encoder: EncoderLike,
    namespace: str,
    texts: list[str],
    settings: EncodeSettings,
    store: DiskEmbeddingStore,
    *,
    progress: Callable[[np.ndarray], None] | None,
    run_options: dict[str, Any],
) -> EncodeResult:
    """Embeddings of distinct ``texts`` that ``store`` lacks, shared with other processes.

    Claims the texts nobody has stored or is encoding, encodes them and writes
    them to the store, then waits for the texts that live claims of other
    processes cover, reading them from the store as they arrive. A claim whose
    process died (seen on this host) or stopped renewing it (on any host) is
    taken over and its texts encoded here.

    The guarantee: while every process that claims a text lives, renews its
    claim and can write the store, each text is encoded by one process in
    all. A text is encoded once more for each claimant that dies or stalls
    past the lease before its rows are written, and for each time its row is
    evicted (``max_bytes``) before a waiting process reads it. A store that
    cannot be written coordinates nothing: every process encodes what it needs.
    """
    embeddings = np.empty((len(texts), encoder.embedding_dimension), dtype=np.float32)
    truncated = np.zeros(len(texts), dtype=bool)
    position = {text: i for i, text in enumerate(texts)}
    # Unique per call: threads of one process wait for each other's claims like processes do.
    owner = f"{_HOST}:{os.getpid()}:{secrets.token_hex(8)}"
    waiting, pause = texts, _FIRST_POLL_SECONDS
    while True:
        claimed = store.claim(namespace, waiting, owner, encoder.embedding_dimension)
        found, mine = ({}, waiting) if claimed is None else claimed
        if found:
            rows = np.fromiter(map(position.__getitem__, found), dtype=np.int64, count=len(found))
            embeddings[rows] = np.stack([vector for vector, _ in found.values()])
            truncated[rows] = [cut for _, cut in found.values()]
            if progress is not None:
                progress(rows)
        if mine:
            rows = np.fromiter(map(position.__getitem__, mine), dtype=np.int64, count=len(mine))
            with _lease(store, owner, claimed is not None):
                result = encoder.encode(
                    mine, settings, progress=_rows_progress(progress, rows), **run_options
                )
                store.put(namespace, mine, result.embeddings, result.truncated)
            embeddings[rows], truncated[rows] = result.embeddings, result.truncated
        if len(found) + len(mine) == len(waiting):
            return EncodeResult(embeddings, truncated)
        done = set(found).union(mine)
        waiting = [text for text in waiting if text not in done]
        time.sleep(pause)
        pause = min(2 * pause, _LAST_POLL_SECONDS)


def _rows_progress(
    progress: Callable[[np.ndarray], None] | None, rows: np.ndarray
) -> Callable[[np.ndarray], None] | None:
    """``progress`` of positions in a subset, told as the subset's ``rows`` of the whole."""
    if progress is None:
        return None
    return lambda done: progress(rows[done])


@contextmanager
def _lease(store: DiskEmbeddingStore, owner: str, claimed: bool) -> Iterator[None]:
    """Keep ``owner``'s claims live while the body runs; drop them after it, however it ends.

    Dropped after the rows are written, so a waiting process finds either the
    claim or the row; dropped on an error too, so that others take the texts
    over at once instead of after the lease.
    """
    if not claimed:
        yield
        return
    stop = threading.Event()

    def renew() -> None:
        # Read at each call: the lease is the store module's, one setting for both sides.
        while not stop.wait(_store.CLAIM_LEASE_SECONDS / 4):
            store.renew(owner)

    thread = threading.Thread(target=renew, name="skembed-claim-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        store.release(owner)
