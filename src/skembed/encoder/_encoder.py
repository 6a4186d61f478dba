"""The encoder: a loaded model folder that turns a list of texts into embeddings.

It tokenizes (in a worker thread, a chunk ahead), batches by token length, runs
the module pipeline (:mod:`skembed.encoder.modules`) and assembles the rows in
input order; the modules themselves know how to load, save and run.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._batching import Batch, PreparedChunk, pad_batch, plan_batches
from ._chunking import Chunking, WindowEmbeddings, combine_windows, cut_windows
from ._counters import count
from ._fingerprint import folder_fingerprint
from ._folder import FolderSpec, read_folder, save_folder
from ._protocol import EncoderLike
from ._types import EncodeResult, EncodeSettings
from .modules import Module, Pipeline, Pooling, Router, StaticEmbedding, Transformer

__all__ = ["EncodeResult", "EncodeSettings", "Encoder"]


# Characters per token a text is first cut to before tokenizing; the cut is widened as long as
# it could change the tokens that are kept.
_CHARS_PER_TOKEN = 16
_MIN_CHARS = 4096
# Words between the last kept token and the cut: pre-tokenizers look one word ahead at most
# (a run of spaces splits differently before a word than at the end of a text).
_SAFE_WORDS = 3


def _clip(text: str, backend, max_length: int) -> str:
    """The shortest prefix of ``text`` (from a doubling budget) with the same kept tokens.

    Tokenizing a whole 100,000-character text to keep its first 256 tokens costs memory in
    proportion to the text. Tokens are made word by word after pre-tokenization, so a
    prefix that overflows ``max_length`` and ends several words after the last kept token
    yields exactly the kept tokens of the whole text, and the same truncation flag.
    """
    budget = max(_MIN_CHARS, _CHARS_PER_TOKEN * max_length)
    while budget < len(text):
        prefix = text[:budget]
        encoding = backend.encode(prefix)
        kept = [w for w in encoding.word_ids if w is not None]
        later = [w for o in encoding.overflowing for w in o.word_ids if w is not None]
        if kept and later and later[-1] - kept[-1] >= _SAFE_WORDS:
            return prefix
        budget *= 4
    return text


# Texts tokenized per chunk: the next chunk is tokenized while the model runs this one, and
# memory for tokens stays bounded however many texts come in.
_CHUNK_TEXTS = 16384


@dataclass(frozen=True)
class _Run:
    """How one call runs: the modules for its task, the token limit and the prompt."""

    chain: list[Module]
    max_length: int
    prompt: str | None
    prompt_length: int

    @property
    def input_module(self) -> Module:
        return self.chain[0]


class Encoder(EncoderLike):
    """A model folder loaded on one device, ready to encode texts.

    Parameters
    ----------
    folder : Path
        A resolved local model folder (see ``resolve_model_folder``).
    device : torch.device
        Where the model runs.
    trust_remote_code : bool, default=False
        Allow custom model code from the folder to run.
    dtype : torch.dtype, default=torch.float32
        Precision of the transformer. Pooling sums, dense and layer-norm
        layers, static embeddings and normalisation stay in float32.

    Attributes
    ----------
    pipeline : Pipeline
        The modules as one ``torch.nn.Module``: train it, or call it on the
        features :meth:`tokenize` gives.
    embedding_dimension : int
        Size of the embeddings :meth:`encode` returns.
    """

    def __init__(
        self,
        folder: Path,
        device: torch.device,
        trust_remote_code: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.fingerprint = folder_fingerprint(folder)
        self._spec = read_folder(folder, device, dtype, trust_remote_code)
        if folder_fingerprint(folder) != self.fingerprint:
            raise OSError(
                f"The model folder {folder} changed while it was being loaded; load it again."
            )
        count("models_loaded", 1)
        self.device = device
        self.dtype = dtype
        self.pipeline: Pipeline = self._spec.pipeline
        self.embedding_dimension: int = self.pipeline.output_dimension
        if dtype == torch.int8 and not any(
            isinstance(m, Transformer) for m in self.pipeline.modules()
        ):
            # Vectors keyed as int8 would be float32 ones: refuse instead of pretending.
            raise ValueError(
                f"dtype='int8' quantizes a Transformer module; {folder} has none (its input "
                f"module is a {type(self.input_module).__name__}). Use dtype='float32'."
            )

    @property
    def spec(self) -> FolderSpec:
        """The folder's module pipeline and settings."""
        return self._spec

    @property
    def input_module(self) -> Module:
        """The pipeline's input module (Transformer, StaticEmbedding or Router)."""
        return self.pipeline.input_module

    @property
    def _first_input(self) -> Module:
        # A Router reports its first route's tokenizer and model, as the reference's does.
        module = self.input_module
        return module.first_input if isinstance(module, Router) else module

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer of the input module (a Router's first route's)."""
        return self._first_input.tokenizer

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model of the input module (a StaticEmbedding: the module itself)."""
        first = self._first_input
        return getattr(first, "auto_model", first)

    @property
    def reads_whole_texts(self) -> bool:
        """Whether the input module takes no token limit (a StaticEmbedding)."""
        return isinstance(self.input_module, StaticEmbedding)

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the transformer's position table allows, if it has one.

        For a Router, the smallest of its transformers'.
        """
        return self.input_module.max_position_embeddings

    @property
    def default_max_seq_length(self) -> int:
        """``max_seq_length`` of the folder, else the tokenizer's limit capped by the model's.

        A StaticEmbedding reads whole texts (:data:`sys.maxsize`); a Router reports
        the largest limit of its transformer routes, as the reference library does.
        """
        return self.input_module.default_max_seq_length

    @property
    def prefetch(self) -> int:
        """Chunks tokenized ahead of the one the model runs.

        Two on a GPU, so that padding one chunk (Python, under the GIL) overlaps
        tokenizing the next (Rust, without it); one on the CPU, whose cores the
        model itself uses.
        """
        return 2 if self.device.type == "cuda" else 1

    def _batch_size(self, input_module: Module) -> int:
        # BERT encoders on the CPU run no padding: there the token budget alone sizes a batch,
        # and many rows make larger, faster matrix products.
        return 64 if self.device.type == "cpu" and not input_module.unpadded else 4096

    @property
    def default_batch_size(self) -> int:
        """Rows per batch when none is given: 64 for padded batches on the CPU, else 4096.

        BERT encoders on the CPU run no padding (``PackedBert``): there the token
        budget alone sizes a batch.
        """
        return self._batch_size(self._first_input)

    @property
    def default_batch_tokens(self) -> int:
        """Padded tokens per batch when no budget is given."""
        # On the CPU, 4096 tokens (64 texts of 64 tokens) keep the forward pass's working
        # memory near 100 MB for long texts, at no cost for sentence-length ones.
        return 64 * 64 if self.device.type == "cpu" else 4096 * 64

    def _run_for(self, settings: EncodeSettings) -> _Run:
        """The modules, token limit and prompt tokens of ``settings``."""
        chain = self.pipeline.chain(settings.task)
        first = chain[0]
        # A limit other than a Router's own applies to every route, as the reference's setter
        # does; the Router's limit leaves each route its own.
        limit = settings.max_seq_length
        max_length = (
            limit
            if limit and limit != self.default_max_seq_length
            else first.default_max_seq_length
        )
        prompt = settings.prompt or None
        pooling = next((m for m in chain if isinstance(m, Pooling)), None)
        prompt_length = 0
        if prompt and pooling is not None and not pooling.include_prompt:
            prompt_length = _prompt_length(first, prompt, max_length)
        return _Run(chain, max_length, prompt, prompt_length)

    def prompt_length(self, prompt: str, max_length: int) -> int:
        """Number of tokens a prompt adds, not counting a trailing special token."""
        return _prompt_length(self._first_input, prompt, max_length)

    def tokenize(
        self, texts: list[str], settings: EncodeSettings | None = None
    ) -> dict[str, torch.Tensor | int | str | None]:
        """The features of ``texts`` as one padded batch on the model's device.

        ``pipeline(features)["sentence_embedding"]`` is then what :meth:`encode`
        returns, before normalisation, for these settings; with gradients enabled
        and the pipeline in training mode, it trains.
        """
        settings = settings or EncodeSettings()
        run = self._run_for(settings)
        first = run.input_module
        inputs = [run.prompt + text for text in texts] if run.prompt else list(texts)
        encodings = first.backend(run.max_length).encode_batch_fast(
            inputs, add_special_tokens=first.add_special_tokens
        )
        arrays = pad_batch(
            encodings,
            pad_id=first.tokenizer.pad_token_id or 0,
            left=first.tokenizer.padding_side == "left",
            with_token_types=first.token_types,
        )
        features: dict[str, torch.Tensor | int | str | None] = {
            k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()
        }
        features.update(prompt_length=run.prompt_length, task=settings.task)
        return features

    def encode(
        self,
        texts: list[str],
        settings: EncodeSettings | None = None,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        progress: Callable[[np.ndarray], None] | None = None,
    ) -> EncodeResult:
        """Encode texts into float32 embeddings, returned in input order.

        Texts are tokenized by the Rust tokenizer in chunks (the next chunk
        while the model runs the current one), sorted by token length so
        batches carry little padding, and run under ``torch.inference_mode``.
        A batch that runs out of CUDA memory is halved and retried.

        Parameters
        ----------
        texts : list of str
        settings : EncodeSettings, optional
            The options that change embeddings (token limit, prompt,
            normalisation, task); default ``EncodeSettings()``.
        batch_size : int, optional
            Most rows per batch; default :attr:`default_batch_size`.
        max_batch_tokens : int, optional
            Most padded tokens per batch; default :attr:`default_batch_tokens`.
            A single text always fits. Where the model runs no padding
            (``PackedBert``), most real tokens.
        progress : callable, optional
            Called after each batch with the positions (in ``texts``) it
            encoded, e.g. to advance a progress bar.

        Returns
        -------
        EncodeResult
        """
        count("texts_encoded", len(texts))
        settings = settings or EncodeSettings()
        run = self._run_for(settings)
        max_rows = batch_size or self._batch_size(run.input_module)
        max_tokens = max_batch_tokens or self.default_batch_tokens
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        if settings.chunking is not None:
            # Nothing is cut: every token of a text is in one of its windows.
            pooling = settings.chunking.pooling
            for start, part in self._window_parts(texts, settings, run, max_rows, max_tokens):
                n = int(part.text[-1]) + 1  # every text has a window
                combined = combine_windows(part.embeddings, part.text, part.tokens, n, pooling)
                if settings.normalize_embeddings:
                    combined = _normalized(combined)
                out[start : start + n] = combined
                if progress is not None:
                    progress(np.arange(start, start + n))
            return EncodeResult(out, truncated)
        inputs = [run.prompt + text for text in texts] if run.prompt else list(texts)
        with torch.inference_mode():
            chunks = self._prepared_chunks(
                inputs,
                max_rows,
                max_tokens,
                lambda start, part: self._prepare(start, part, run, max_rows, max_tokens),
            )
            ran = (
                (prepared, *self._run_chunk(prepared, run, settings.normalize_embeddings, progress))
                for prepared in chunks
            )
            for prepared, rows, embeddings in self._copied_back(ran):
                out[prepared.start + rows] = embeddings
                truncated[prepared.start : prepared.start + len(prepared.truncated)] = (
                    prepared.truncated
                )
        return EncodeResult(out, truncated)

    def encode_chunks(
        self,
        texts: list[str],
        settings: EncodeSettings,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
    ) -> WindowEmbeddings:
        """One embedding per window of each text, for ``settings.chunking``.

        The windows that :meth:`encode` combines, each its own row
        (L2-normalised with ``settings.normalize_embeddings``), for searching
        long texts by their best passage.

        Parameters
        ----------
        texts : list of str
        settings : EncodeSettings
            With ``chunking`` set.
        batch_size, max_batch_tokens : int, optional
            As for :meth:`encode`.

        Returns
        -------
        WindowEmbeddings
            The rows of each text consecutive, texts in input order.
        """
        if settings.chunking is None:
            raise ValueError("encode_chunks needs settings with chunking.")
        count("texts_encoded", len(texts))
        run = self._run_for(settings)
        max_rows = batch_size or self._batch_size(run.input_module)
        max_tokens = max_batch_tokens or self.default_batch_tokens
        parts = list(self._window_parts(texts, settings, run, max_rows, max_tokens))
        embeddings = np.concatenate(
            [part.embeddings for _, part in parts]
            or [np.empty((0, self.embedding_dimension), dtype=np.float32)]
        )
        if settings.normalize_embeddings:
            embeddings = _normalized(embeddings)
        text = np.concatenate([part.text + start for start, part in parts] or [np.empty(0, int)])
        tokens = np.concatenate([part.tokens for _, part in parts] or [np.empty(0, int)])
        return WindowEmbeddings(embeddings, text.astype(np.int64), tokens.astype(np.int64))

    def _window_parts(
        self, texts: list[str], settings: EncodeSettings, run: _Run, max_rows: int, max_tokens: int
    ) -> Iterator[tuple[int, WindowEmbeddings]]:
        """The window embeddings of each chunk of ``texts``, with the chunk's first position.

        The windows of all the texts of a chunk are batched together, as ordinary rows.
        """
        if not isinstance(run.input_module, Transformer):
            raise ValueError(
                f"long_text='chunk' cuts a transformer's tokens into windows; the model's input "
                f"module is a {type(run.input_module).__name__}, which reads whole texts."
            )
        chunking = settings.chunking
        assert chunking is not None
        prompt_tokens = _prompt_tokens(run.input_module, run.prompt) if run.prompt else 0
        inputs = [run.prompt + text for text in texts] if run.prompt else list(texts)

        def prepare(start: int, part: list[str]) -> PreparedChunk:
            return self._prepare_windows(
                start, part, run, max_rows, max_tokens, chunking, prompt_tokens
            )

        with torch.inference_mode():
            chunks = self._prepared_chunks(inputs, max_rows, max_tokens, prepare)
            ran = ((prepared, *self._run_chunk(prepared, run, False, None)) for prepared in chunks)
            for prepared, rows, embeddings in self._copied_back(ran):
                windows = prepared.windows
                assert windows is not None
                out = np.empty((len(windows.text), self.embedding_dimension), dtype=np.float32)
                out[rows] = embeddings
                yield prepared.start, WindowEmbeddings(out, windows.text, windows.tokens)

    def count_tokens(self, texts: list[str], settings: EncodeSettings | None = None) -> np.ndarray:
        """Tokens of each text as the model's tokenizer counts them, nothing cut.

        The prompt of ``settings`` and the special tokens are counted, so a text
        is truncated exactly when its count exceeds the token limit.

        Parameters
        ----------
        texts : list of str
        settings : EncodeSettings, optional

        Returns
        -------
        ndarray of shape (n_texts,), int64
        """
        run = self._run_for(settings or EncodeSettings())
        first = run.input_module
        backend = first.backend(None)
        counts = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), _CHUNK_TEXTS):
            part = texts[start : start + _CHUNK_TEXTS]
            inputs = [run.prompt + text for text in part] if run.prompt else part
            encodings = backend.encode_batch_fast(
                inputs, add_special_tokens=first.add_special_tokens
            )
            counts[start : start + len(part)] = [len(e.ids) for e in encodings]
        return counts

    def _prepared_chunks(
        self,
        inputs: list[str],
        max_rows: int,
        max_tokens: int,
        prepare: Callable[[int, list[str]], PreparedChunk],
    ) -> Iterator[PreparedChunk]:
        """Chunks of ``inputs`` made ready by ``prepare``, :attr:`prefetch` ahead of the model."""
        # A few batches per chunk: enough to overlap tokenizing with the model, few enough
        # that the tokenized chunk stays small next to the output. Batches are counted at
        # 64 tokens a text where the token budget, not the row count, bounds them.
        cap = min(_CHUNK_TEXTS, max(1024, 8 * min(max_rows, max_tokens // 64)))
        bounds = _chunk_bounds(len(inputs), cap)
        depth = self.prefetch
        with ThreadPoolExecutor(max_workers=depth) as worker:

            def submit(start: int, stop: int) -> Future[PreparedChunk]:
                return worker.submit(prepare, start, inputs[start:stop])

            pending = deque(submit(*b) for b in bounds[:depth])
            for index in range(len(bounds)):
                prepared = pending.popleft().result()
                if index + depth < len(bounds):
                    pending.append(submit(*bounds[index + depth]))
                yield prepared

    def _copied_back(
        self, ran: Iterator[tuple[PreparedChunk, np.ndarray, torch.Tensor]]
    ) -> Iterator[tuple[PreparedChunk, np.ndarray, np.ndarray]]:
        """Each chunk's embeddings on the host, in order.

        From a GPU the copy of one chunk runs (pinned, asynchronous) while the next
        chunk's batches are launched; it is waited for only after that, so the device
        never idles on a copy back.
        """
        if self.device.type != "cuda":
            for prepared, rows, embeddings in ran:
                yield prepared, rows, embeddings.cpu().numpy()
            return
        pending = None
        for prepared, rows, embeddings in ran:
            host = torch.empty(embeddings.shape, dtype=embeddings.dtype, pin_memory=True)
            host.copy_(embeddings, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            if pending is not None:
                yield _when_copied(*pending)
            pending = (prepared, rows, host, copied)
        if pending is not None:
            yield _when_copied(*pending)

    def _run_chunk(
        self,
        prepared: PreparedChunk,
        run: _Run,
        normalize: bool,
        progress: Callable[[np.ndarray], None] | None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The chunk's rows (relative to its start) and their embeddings (on the device)."""
        rows, outputs = [], []
        for batch in prepared.batches:
            embeddings = self._forward_splitting_on_oom(batch, run)
            if normalize:
                embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
            rows.append(batch.rows)
            outputs.append(embeddings)
            if progress is not None:
                progress(prepared.start + batch.rows)
        # One device-to-host copy per chunk (see _copied_back) keeps the device busy.
        return np.concatenate(rows), torch.cat(outputs)

    def _prepare(
        self, start: int, texts: list[str], run: _Run, max_rows: int, max_tokens: int
    ) -> PreparedChunk:
        """Tokenize a chunk and build its padded batches (runs in a worker thread)."""
        first = run.input_module
        max_length = run.max_length
        backend = first.backend(max_length)
        if first.tokenizer.truncation_side == "right":
            limit = max(_MIN_CHARS, _CHARS_PER_TOKEN * max_length)
            texts = [t if len(t) <= limit else _clip(t, backend, max_length) for t in texts]
        # The fast variant skips character offsets, which are never used here (a third of
        # the time and most of the memory of a tokenized chunk).
        encodings = backend.encode_batch_fast(texts, add_special_tokens=first.add_special_tokens)
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool)
        return PreparedChunk(
            start, truncated, self._batches(encodings, first, max_rows, max_tokens)
        )

    def _prepare_windows(
        self,
        start: int,
        texts: list[str],
        run: _Run,
        max_rows: int,
        max_tokens: int,
        chunking: Chunking,
        prompt_tokens: int,
    ) -> PreparedChunk:
        """Tokenize a chunk whole, cut it into windows and batch those (in a worker thread)."""
        first = run.input_module
        encodings = first.backend(None).encode_batch_fast(
            texts, add_special_tokens=first.add_special_tokens
        )
        windows = cut_windows(encodings, prompt_tokens, chunking)
        batches = self._batches(windows.encodings, first, max_rows, max_tokens)
        return PreparedChunk(start, np.zeros(len(texts), dtype=bool), batches, windows)

    def _batches(
        self, encodings: list, first: Module, max_rows: int, max_tokens: int
    ) -> list[Batch]:
        """Padded batches of tokenized rows, rows of like length together."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        pinned = self.device.type == "cuda"
        batches = []
        for rows in plan_batches(lengths, max_rows, max_tokens, unpadded=first.unpadded):
            arrays = pad_batch(
                [encodings[i] for i in rows],
                pad_id=first.tokenizer.pad_token_id or 0,
                left=first.tokenizer.padding_side == "left",
                with_token_types=first.token_types,
                lengths=lengths[rows],
            )
            tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
            if pinned:
                # Page-locked host memory lets the copy to the GPU run asynchronously.
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
            batches.append(Batch(rows, tensors))
        return batches

    def _forward_splitting_on_oom(self, batch: Batch, run: _Run) -> torch.Tensor:
        try:
            return self._forward(batch.tensors, run)
        except torch.cuda.OutOfMemoryError:
            if len(batch.rows) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            first, second = batch.split()
            return torch.cat(
                [
                    self._forward_splitting_on_oom(first, run),
                    self._forward_splitting_on_oom(second, run),
                ]
            )

    def _forward(self, tensors: dict[str, torch.Tensor], run: _Run) -> torch.Tensor:
        """Token ids of one batch -> float32 sentence embeddings, on the model's device."""
        features = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
        features["prompt_length"] = run.prompt_length
        if run.input_module.unpadded:
            # Counted on the host, so the unpadded pass never waits on the device for it.
            features["token_count"] = int(tensors["attention_mask"].sum())
        for module in run.chain:
            features = module(features)
        return features["sentence_embedding"]

    def save(self, path: str | os.PathLike[str], **options) -> None:
        """Write the model as a sentence-transformers model folder.

        Parameters
        ----------
        path : str or path-like
            Target folder, created if needed.
        **options
            What to change in the saved folder: ``max_seq_length``,
            ``similarity_fn_name``, ``normalize``, ``prompt``, ``prompts``,
            ``truncate_dim`` (see :meth:`FolderSpec.updated`).
        """
        save_folder(Path(path), self.spec.updated(**options))


def _chunk_bounds(n: int, cap: int) -> list[tuple[int, int]]:
    """(start, stop) of each tokenization chunk of ``n`` texts.

    The first chunk is small and each next one twice as large, up to ``cap``: the
    model starts after a short wait, and later chunks amortise their overhead.
    """
    bounds, start, size = [], 0, min(cap, 1024)
    while start < n:
        bounds.append((start, min(n, start + size)))
        start, size = start + size, min(cap, 2 * size)
    return bounds


def _when_copied(
    prepared: PreparedChunk, rows: np.ndarray, host: torch.Tensor, copied: torch.cuda.Event
) -> tuple[PreparedChunk, np.ndarray, np.ndarray]:
    copied.synchronize()
    return prepared, rows, host.numpy()


def _prompt_tokens(input_module: Module, prompt: str) -> int:
    """Tokens of a prompt alone, special tokens not counted."""
    encoding = input_module.backend(None).encode(prompt)
    return len(encoding.special_tokens_mask) - sum(encoding.special_tokens_mask)


def _normalized(embeddings: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, as the per-batch normalisation does it."""
    rows = torch.from_numpy(np.ascontiguousarray(embeddings))
    return torch.nn.functional.normalize(rows, p=2.0, dim=-1).numpy()


def _prompt_length(input_module: Module, prompt: str, max_length: int) -> int:
    """Number of tokens a prompt adds, not counting a trailing special token."""
    ids = input_module.backend(max_length).encode(prompt).ids
    special = set(input_module.tokenizer.all_special_ids)
    return len(ids) - 1 if ids and ids[-1] in special else len(ids)
