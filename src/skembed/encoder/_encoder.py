"""The encoder: a loaded model folder that turns a list of texts into embeddings."""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._batching import Batch, PreparedChunk, pad_batch, plan_batches
from ._folder import (
    DenseSpec,
    DropoutSpec,
    FolderSpec,
    LayerNormSpec,
    NormalizeSpec,
    PoolingSpec,
    WeightedLayerPoolingSpec,
    check_model_config,
    named_module_folders,
    read_folder,
    write_folder_configs,
)
from ._packed import PackedBert
from ._pooling import pool

__all__ = [
    "EncodeResult",
    "EncodeSettings",
    "Encoder",
    "folder_fingerprint",
    "load_encoder",
    "loaded_models",
    "release_models",
    "set_max_loaded_models",
    "work_counts",
]


@dataclass(frozen=True)
class EncodeSettings:
    """Every option of :meth:`Encoder.encode` that can change an embedding.

    Caches key embeddings by all of these fields, so an option added here can
    never reuse vectors computed without it.

    Parameters
    ----------
    max_seq_length : int, optional
        Token limit per text; default is the model's.
    prompt : str, optional
        Text prepended to every input.
    normalize_embeddings : bool, default=False
        L2-normalise the output rows.
    task : str, optional
        The task of the texts (``"query"``, ``"document"``): picks the route of a
        model with a Router; no effect on other models.
    """

    max_seq_length: int | None = None
    prompt: str | None = None
    normalize_embeddings: bool = False
    task: str | None = None


@dataclass(frozen=True)
class EncodeResult:
    """Embeddings of a list of texts, in input order, and which texts were truncated."""

    embeddings: np.ndarray
    truncated: np.ndarray

    @property
    def n_truncated(self) -> int:
        """How many texts were longer than the token limit."""
        return int(self.truncated.sum())


class _Dense(torch.nn.Module):
    def __init__(self, spec: DenseSpec, trust_remote_code: bool) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.residual = (
            torch.nn.Linear(spec.in_features, spec.out_features, bias=False)
            if spec.use_residual and spec.in_features != spec.out_features
            else None
        )
        self.use_residual = spec.use_residual
        self.activation = _activation(spec.activation, trust_remote_code)
        self.load_state_dict(_load_weights(spec.path), strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out


class _LayerNorm(torch.nn.Module):
    def __init__(self, spec: LayerNormSpec) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(spec.dimension)
        _load_strict(self, spec.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _WeightedLayerPooling(torch.nn.Module):
    def __init__(self, spec: WeightedLayerPoolingSpec) -> None:
        super().__init__()
        self.layer_start = spec.layer_start
        self.layer_weights = torch.nn.Parameter(
            torch.ones(spec.num_hidden_layers + 1 - spec.layer_start)
        )
        _load_strict(self, spec.path)

    def forward(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        layers = torch.stack(hidden_states[self.layer_start :])
        weights = self.layer_weights.view(-1, 1, 1, 1)
        return (weights * layers).sum(dim=0) / self.layer_weights.sum()


class _StaticEmbedding(torch.nn.Module):
    """The mean of the embeddings of a text's tokens; an empty text gives zeros."""

    def __init__(self, folder: Path, vocabulary_size: int) -> None:
        super().__init__()
        weights = _load_weights(folder)
        if "embedding.weight" in weights:
            table = weights["embedding.weight"]
        elif "embeddings" in weights:
            table = _fold_model2vec(weights)
        else:
            raise ValueError(
                f"The weights in {folder} hold {sorted(weights)}; a StaticEmbedding needs "
                "'embedding.weight' (or a model2vec 'embeddings' table)."
            )
        if table.ndim != 2 or table.shape[0] < vocabulary_size:
            raise ValueError(
                f"The embedding table in {folder} has shape {tuple(table.shape)}; its tokenizer "
                f"makes token ids up to {vocabulary_size - 1}, so it needs a 2-D table with at "
                f"least {vocabulary_size} rows."
            )
        self.embedding = torch.nn.EmbeddingBag.from_pretrained(table.float(), mode="mean")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()
        lengths = keep.sum(dim=1)
        offsets = torch.cumsum(lengths, dim=0) - lengths
        return self.embedding(input_ids[keep], offsets)


def _fold_model2vec(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per token id from a model2vec table, token mapping and per-token weights."""
    table = weights["embeddings"]
    if "mapping" in weights:
        table = table[weights["mapping"].long()]
    if "weights" in weights:
        table = table.float() * weights["weights"].float()[:, None]
    return table


def _load_strict(module: torch.nn.Module, folder: Path) -> None:
    """Load a module's weights, refused unless they are exactly the ones its config implies."""
    try:
        module.load_state_dict(_load_weights(folder))
    except RuntimeError as exc:
        raise ValueError(f"The weights in {folder} do not match its config.json: {exc}") from None


def _activation(dotted: str, trust_remote_code: bool) -> torch.nn.Module:
    if not (dotted.startswith("torch.") or trust_remote_code):
        raise ValueError(
            f"Dense activation {dotted!r} is not a torch class; loading it runs code from the "
            "model folder, so pass trust_remote_code=True if you trust it."
        )
    module_name, _, class_name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"Dense activation {dotted!r} is not a torch.nn.Module class.")
    return cls()


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        return load_file(safetensors_path)
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        # weights_only refuses pickled code: a .bin file cannot run anything on load.
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise OSError(f"No model.safetensors or pytorch_model.bin in {folder}.")


def _model_files(folder: Path) -> list[tuple[str, Path]]:
    """Every file a model folder can load from, by relative name.

    Hidden entries (``.git``, ``.cache``) are left out, except the module folders that
    ``modules.json`` or a Router's config names: the loader opens those whatever their
    names. Links are followed: file links anywhere (the Hugging Face cache links every
    file to a blob), folder links that stay inside the model folder (:func:`read_folder`
    refuses modules outside it, so nothing is loaded from beyond).
    """
    root = folder.resolve()
    files: dict[str, Path] = {}
    seen: set[Path] = set()

    def walk(start: Path) -> None:
        for dirpath, dirs, names in os.walk(start, followlinks=True):
            here = Path(dirpath)
            target = here.resolve()
            if target in seen or (target != root and root not in target.parents):
                dirs[:] = []  # a loop of links, a folder seen under another name, or outside
                continue
            seen.add(target)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = here / name
                if not name.startswith(".") and path.is_file():
                    files.setdefault(path.relative_to(folder).as_posix(), path)

    walk(folder)
    for module_folder in named_module_folders(folder):
        if module_folder.is_dir():
            walk(module_folder)
    return sorted(files.items())


def _file_stats(files: list[tuple[str, Path]]) -> tuple:
    # Inode and change time catch a rewrite of the same size within the clock's resolution.
    return tuple(
        (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        for name, st in ((name, path.stat()) for name, path in files)
    )


# Per folder: the file stats the last hash was taken at, and that hash.
_FINGERPRINTS: dict[str, tuple[tuple, str]] = {}
_FINGERPRINTS_LOCK = threading.Lock()


def folder_fingerprint(folder: Path) -> str:
    """Return a SHA-256 over the names and contents of the files of a model folder.

    The hash is taken again whenever a file's size, times or inode change, so a
    folder rewritten in place gets a new fingerprint; otherwise a process
    hashes a folder once.

    Raises
    ------
    OSError
        If the files keep changing while they are hashed.
    """
    for _ in range(3):
        files = _model_files(folder)
        stats = _file_stats(files)
        with _FINGERPRINTS_LOCK:
            known = _FINGERPRINTS.get(str(folder))
        if known is not None and known[0] == stats:
            return known[1]
        digest = hashlib.sha256()
        for name, path in files:
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
        # A writer that was busy while we read leaves different stats: hash again.
        if _file_stats(files) == stats and [n for n, _ in _model_files(folder)] == [
            n for n, _ in files
        ]:
            with _FINGERPRINTS_LOCK:
                _FINGERPRINTS[str(folder)] = (stats, digest.hexdigest())
            return digest.hexdigest()
    raise OSError(f"The files of the model folder {folder} kept changing while being read.")


# What this process has done, for checking that work is not repeated across processes (a
# Dask or loky worker loads a model once, a stored text is never encoded again).
_WORK_COUNTS = {"models_loaded": 0, "texts_encoded": 0}
_WORK_COUNTS_LOCK = threading.Lock()


def _count(name: str, n: int) -> None:
    with _WORK_COUNTS_LOCK:
        _WORK_COUNTS[name] += n


def work_counts() -> dict[str, int]:
    """What this process has loaded and encoded since it started.

    Call it on each worker (e.g. ``dask.distributed.Client.run(work_counts)``)
    to see that a model is loaded once per worker and that texts found in a
    store are not encoded again.

    Returns
    -------
    dict
        ``models_loaded``: models loaded from their files (a model shared
        from the process-wide registry is not loaded again);
        ``texts_encoded``: texts run through a model (cache hits are not).
    """
    with _WORK_COUNTS_LOCK:
        return dict(_WORK_COUNTS)


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


class Encoder:
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
    spec : FolderSpec
        The folder's modules and settings.
    routes : dict of str to Encoder
        For a model with a Router: one encoder per route, which
        :meth:`encode` picks by ``EncodeSettings.task``; empty otherwise.
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
        fingerprint = folder_fingerprint(folder)
        self._setup(read_folder(folder), fingerprint, device, trust_remote_code, dtype)
        if folder_fingerprint(folder) != self.fingerprint:
            raise OSError(
                f"The model folder {folder} changed while it was being loaded; load it again."
            )
        _count("models_loaded", 1)

    def _setup(
        self,
        spec: FolderSpec,
        fingerprint: str,
        device: torch.device,
        trust_remote_code: bool,
        dtype: torch.dtype,
    ) -> None:
        """Load the modules of ``spec``: its input module, its routes and its steps."""
        self.fingerprint = fingerprint
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self._trust_remote_code = trust_remote_code
        self._backends: dict[int, object] = {}
        self._lock = threading.Lock()
        # A Router's routes, each an encoder of its own pipeline.
        self.routes: dict[str, Encoder] = {}
        self._packed: PackedBert | None = None
        if spec.router is not None:
            for name, route_spec in spec.router.routes.items():
                # A route is part of this folder: no fingerprint or folder read of its own.
                route = object.__new__(Encoder)
                route._setup(route_spec, fingerprint, device, trust_remote_code, dtype)
                self.routes[name] = route
            # Callers that read one tokenizer and model get the first route's, as the
            # reference's Router.tokenizer gives.
            first = next(iter(self.routes.values()))
            self.tokenizer, self.model = first.tokenizer, first.model
            self.hidden_size = self._routes_dimension()
        elif spec.static_embedding is not None:
            self._load_static()
        else:
            self._load_input_transformer()
        self._modules: dict[int, torch.nn.Module] = {}
        for position, step in enumerate(spec.steps):
            if isinstance(step, DenseSpec):
                self._modules[position] = _Dense(step, trust_remote_code)
            elif isinstance(step, LayerNormSpec):
                self._modules[position] = _LayerNorm(step)
            elif isinstance(step, WeightedLayerPoolingSpec):
                self._modules[position] = self._weighted_layer_pooling(step)
        self._modules = {k: m.to(device).eval() for k, m in self._modules.items()}
        self.embedding_dimension = self._output_dimension()

    def _load_input_transformer(self) -> None:
        from transformers import AutoTokenizer

        source = self.spec.transformer_path
        check_model_config(source)
        self.tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=self._trust_remote_code
        )
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(
                f"The tokenizer of {source} has no fast (Rust) implementation; skembed needs one."
            )
        self.model = self._load_transformer(self.device, self.dtype)
        self.hidden_size = int(self.model.config.hidden_size)
        accepted = inspect.signature(self.model.forward).parameters
        # T5-style encoders take no token types even when the tokenizer makes them.
        self._token_types = (
            "token_type_ids" in self.tokenizer.model_input_names and "token_type_ids" in accepted
        )
        # Measured on the CPU only (benchmarks/encode_cpu.py); accelerators keep the
        # model's padded forward pass until the unpadded one is measured there.
        self._packed = (
            PackedBert(self.model)
            if self.device.type == "cpu" and PackedBert.supports(self.model)
            else None
        )

    def _load_static(self) -> None:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        folder = self.spec.transformer_path
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise OSError(f"No tokenizer.json in {folder}; a StaticEmbedding needs one.")
        self._static_tokenizer = Tokenizer.from_file(str(path))
        # The wrapper gives the padding and special-token facts the batching code reads.
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(path)))
        # Token ids need not be contiguous: the table must cover the largest.
        vocabulary = self._static_tokenizer.get_vocab(with_added_tokens=True)
        self.model = _StaticEmbedding(folder, max(vocabulary.values(), default=-1) + 1).to(
            self.device
        )
        self.hidden_size = self.model.embedding.embedding_dim
        self._token_types = False

    def _routes_dimension(self) -> int:
        dimensions = {name: route.embedding_dimension for name, route in self.routes.items()}
        if len(set(dimensions.values())) != 1:
            raise ValueError(
                f"The routes of the Router in {self.spec.transformer_path} give embeddings of "
                f"different sizes {dimensions}; skembed needs one size for all texts."
            )
        return next(iter(dimensions.values()))

    def _weighted_layer_pooling(self, step: WeightedLayerPoolingSpec) -> torch.nn.Module:
        layers = getattr(self.model.config, "num_hidden_layers", None)
        if layers != step.num_hidden_layers:
            raise ValueError(
                f"{step.path / 'config.json'}: num_hidden_layers={step.num_hidden_layers}, but the "
                f"transformer has {layers} layers."
            )
        return _WeightedLayerPooling(step)

    def _load_transformer(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoConfig

        source = self.spec.transformer_path
        config = AutoConfig.from_pretrained(source, trust_remote_code=self._trust_remote_code)
        # Sizes the file leaves out are built at the class's defaults: check those too.
        check_model_config(source, config.to_dict())
        model_class = _model_class(config, source)
        # Loaded in float32, then cast: the weights on disk may be in any precision.
        with _quiet_transformers():
            model, loading = model_class.from_pretrained(
                source,
                config=config,
                trust_remote_code=self._trust_remote_code,
                dtype=torch.float32,
                use_safetensors=(source / "model.safetensors").is_file() or None,
                output_loading_info=True,
            )
        _check_complete(model, loading, source)
        return model.to(device=device, dtype=dtype).eval()

    def _output_dimension(self) -> int:
        """The embedding size after the steps, refused where a step's size does not fit."""
        dim = self.hidden_size
        for step in self.spec.steps:
            expected = {DenseSpec: "in_features", LayerNormSpec: "dimension"}.get(type(step))
            if expected is not None and getattr(step, expected) != dim:
                raise ValueError(
                    f"{step.path / 'config.json'}: {expected}={getattr(step, expected)}, but the "
                    f"module before it gives embeddings of size {dim}."
                )
            if isinstance(step, PoolingSpec):
                dim = dim * len(step.modes)
            elif isinstance(step, DenseSpec):
                dim = step.out_features
        return dim

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the transformer's position table allows, if it has one.

        For a Router, the smallest of its transformers'.
        """
        if self.routes:
            limits = [r.max_position_embeddings for r in self.routes.values()]
            return min((n for n in limits if n is not None), default=None)
        value = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def default_max_seq_length(self) -> int:
        """``max_seq_length`` of the folder, else the tokenizer's limit capped by the model's.

        A StaticEmbedding reads whole texts (:data:`sys.maxsize`); a Router reports
        the largest limit of its transformer routes, as the reference library does.
        """
        if self.routes:
            limits = [
                route.default_max_seq_length
                for route in self.routes.values()
                if route.spec.static_embedding is None
            ]
            return max(limits, default=sys.maxsize)
        if self.spec.static_embedding is not None:
            return sys.maxsize
        if self.spec.max_seq_length is not None:
            return int(self.spec.max_seq_length)
        limit = int(self.tokenizer.model_max_length)
        cap = self.max_position_embeddings
        return min(limit, cap) if cap is not None else limit

    @property
    def default_batch_size(self) -> int:
        """Rows per batch when none is given: 64 for padded batches on the CPU, else 4096.

        BERT encoders on the CPU run no padding (:class:`PackedBert`): there the token
        budget alone sizes a batch, and many rows make larger, faster matrix products.
        """
        return 64 if self.device.type == "cpu" and self._packed is None else 4096

    @property
    def default_batch_tokens(self) -> int:
        """Padded tokens per batch when no budget is given."""
        # On the CPU, 4096 tokens (64 texts of 64 tokens) keep the forward pass's working
        # memory near 100 MB for long texts, at no cost for sentence-length ones.
        return 64 * 64 if self.device.type == "cpu" else 4096 * 64

    def _backend(self, max_length: int):
        # One configured copy of the Rust tokenizer per length limit; the shared
        # Hugging Face tokenizer object is never mutated.
        with self._lock:
            if max_length not in self._backends:
                from tokenizers.normalizers import Lowercase, Sequence

                if self.spec.static_embedding is not None:
                    # The reference tokenizes static inputs as its tokenizer.json says: no
                    # token limit is added.
                    backend = copy.deepcopy(self._static_tokenizer)
                    backend.no_padding()
                    self._backends[max_length] = backend
                    return backend
                backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
                backend.no_padding()
                backend.enable_truncation(
                    max_length, strategy="longest_first", direction=self.tokenizer.truncation_side
                )
                if self.spec.do_lower_case:
                    normalizer = backend.normalizer
                    backend.normalizer = Sequence(
                        [Lowercase()] if normalizer is None else [Lowercase(), normalizer]
                    )
                self._backends[max_length] = backend
            return self._backends[max_length]

    def prompt_length(self, prompt: str, max_length: int) -> int:
        """Number of tokens a prompt adds, not counting a trailing special token."""
        ids = self._backend(max_length).encode(prompt).ids
        special = set(self.tokenizer.all_special_ids)
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

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
            normalisation); default ``EncodeSettings()``.
        batch_size : int, optional
            Most rows per batch; default :attr:`default_batch_size`.
        max_batch_tokens : int, optional
            Most padded tokens per batch; default :attr:`default_batch_tokens`.
            A single text always fits. Where the model runs no padding
            (:class:`PackedBert`), most real tokens.
        progress : callable, optional
            Called after each batch with the positions (in ``texts``) it
            encoded, e.g. to advance a progress bar.

        Returns
        -------
        EncodeResult
        """
        _count("texts_encoded", len(texts))
        settings = settings or EncodeSettings()
        if self.routes:
            return self._encode_routed(texts, settings, batch_size, max_batch_tokens, progress)
        max_length = settings.max_seq_length or self.default_max_seq_length
        prompt = settings.prompt
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        inputs = [prompt + text for text in texts] if prompt else list(texts)
        pooling = self.spec.pooling
        prompt_length = (
            self.prompt_length(prompt, max_length)
            if prompt and pooling is not None and not pooling.include_prompt
            else 0
        )
        with torch.inference_mode():
            for prepared in self._prepared_chunks(
                inputs,
                max_length,
                batch_size or self.default_batch_size,
                max_batch_tokens or self.default_batch_tokens,
            ):
                rows, embeddings = self._run_chunk(
                    prepared, prompt_length, settings.normalize_embeddings, progress
                )
                out[prepared.start + rows] = embeddings
                truncated[prepared.start : prepared.start + len(prepared.truncated)] = (
                    prepared.truncated
                )
        return EncodeResult(out, truncated)

    def _encode_routed(
        self,
        texts: list[str],
        settings: EncodeSettings,
        batch_size: int | None,
        max_batch_tokens: int | None,
        progress: Callable[[np.ndarray], None] | None,
    ) -> EncodeResult:
        """Encode through the route of ``settings.task``, then the steps after the Router."""
        assert self.spec.router is not None
        route = self.routes[self.spec.router.route_for(settings.task)]
        # A limit other than the Router's own applies to every route, as the reference's
        # setter does; the Router's limit leaves each route its own.
        limit = settings.max_seq_length
        result = route.encode(
            texts,
            replace(
                settings,
                task=None,
                normalize_embeddings=False,
                max_seq_length=None if limit == self.default_max_seq_length else limit,
            ),
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            progress=progress,
        )
        with torch.inference_mode():
            embeddings = self._run_steps(torch.from_numpy(result.embeddings).to(self.device))
            if settings.normalize_embeddings:
                embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
            out = embeddings.cpu().numpy()
        return EncodeResult(out, result.truncated)

    def _prepared_chunks(
        self, inputs: list[str], max_length: int, max_rows: int, max_tokens: int
    ) -> Iterator[PreparedChunk]:
        """Tokenized, batched chunks of ``inputs``, the next one prepared while this one runs."""
        # A few batches per chunk: enough to overlap tokenizing with the model, few enough
        # that the tokenized chunk stays small next to the output. Batches are counted at
        # 64 tokens a text where the token budget, not the row count, bounds them.
        chunk = min(_CHUNK_TEXTS, max(1024, 8 * min(max_rows, max_tokens // 64)))
        starts = range(0, len(inputs), chunk)
        with ThreadPoolExecutor(max_workers=1) as worker:

            def submit(start: int) -> Future[PreparedChunk]:
                part = inputs[start : start + chunk]
                return worker.submit(self._prepare, start, part, max_length, max_rows, max_tokens)

            pending = submit(starts[0]) if starts else None
            for index in range(len(starts)):
                assert pending is not None
                prepared = pending.result()
                if index + 1 < len(starts):
                    pending = submit(starts[index + 1])
                yield prepared

    def _run_chunk(
        self,
        prepared: PreparedChunk,
        prompt_length: int,
        normalize: bool,
        progress: Callable[[np.ndarray], None] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's rows (relative to its start) and their embeddings, in batch order."""
        rows, outputs = [], []
        for batch in prepared.batches:
            embeddings = self._forward_splitting_on_oom(batch, prompt_length)
            if normalize:
                embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
            rows.append(batch.rows)
            outputs.append(embeddings)
            if progress is not None:
                progress(prepared.start + batch.rows)
        # One device-to-host copy per chunk keeps the accelerator busy in between.
        return np.concatenate(rows), torch.cat(outputs).cpu().numpy()

    def _prepare(
        self, start: int, texts: list[str], max_length: int, max_rows: int, max_tokens: int
    ) -> PreparedChunk:
        """Tokenize a chunk and build its padded batches (runs in a worker thread)."""
        backend = self._backend(max_length)
        if self.tokenizer.truncation_side == "right":
            limit = max(_MIN_CHARS, _CHARS_PER_TOKEN * max_length)
            texts = [t if len(t) <= limit else _clip(t, backend, max_length) for t in texts]
        # The fast variant skips character offsets, which are never used here (a third of
        # the time and most of the memory of a tokenized chunk).
        encodings = backend.encode_batch_fast(
            texts, add_special_tokens=self.spec.static_embedding is None
        )
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        pinned = self.device.type == "cuda"
        batches = []
        unpadded = self._packed is not None
        for rows in plan_batches(lengths, max_rows, max_tokens, unpadded=unpadded):
            arrays = pad_batch(
                [encodings[i] for i in rows],
                pad_id=self.tokenizer.pad_token_id or 0,
                left=self.tokenizer.padding_side == "left",
                with_token_types=self._token_types,
            )
            tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
            if pinned:
                # Page-locked host memory lets the copy to the GPU run asynchronously.
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
            batches.append(Batch(rows, tensors))
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool)
        return PreparedChunk(start, truncated, batches)

    def _forward_splitting_on_oom(self, batch: Batch, prompt_length: int) -> torch.Tensor:
        try:
            return self._forward(batch.tensors, prompt_length)
        except torch.cuda.OutOfMemoryError:
            if len(batch.rows) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            first, second = batch.split()
            return torch.cat(
                [
                    self._forward_splitting_on_oom(first, prompt_length),
                    self._forward_splitting_on_oom(second, prompt_length),
                ]
            )

    def _forward(self, tensors: dict[str, torch.Tensor], prompt_length: int) -> torch.Tensor:
        """Token ids of one batch -> float32 sentence embeddings, on the model's device."""
        tensors = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
        mask = tensors["attention_mask"]
        if self.spec.static_embedding is not None:
            return self._run_steps(self.model(tensors["input_ids"], mask))
        if self._packed is not None:
            hidden = self._packed(tensors["input_ids"], mask, tensors.get("token_type_ids"))
            return self._run_steps(hidden, mask, None, prompt_length)
        output = self.model(**tensors, return_dict=True)
        # Hidden layers come back only when the model's config asks for them; the reference's
        # WeightedLayerPooling passes token embeddings through unchanged otherwise.
        layers = output.hidden_states if self.model.config.output_hidden_states else None
        return self._run_steps(output.last_hidden_state, mask, layers, prompt_length)

    def _run_steps(
        self,
        embeddings: torch.Tensor,
        mask: torch.Tensor | None = None,
        layers: tuple[torch.Tensor, ...] | None = None,
        prompt_length: int = 0,
    ) -> torch.Tensor:
        """Apply the steps after the input module (token-level ones need ``mask``)."""
        for position, step in enumerate(self.spec.steps):
            if isinstance(step, PoolingSpec):
                assert mask is not None
                embeddings = pool(embeddings, mask, step.modes, prompt_length).float()
            elif isinstance(step, WeightedLayerPoolingSpec):
                if layers is not None:
                    embeddings = self._modules[position](layers)
            elif isinstance(step, DenseSpec | LayerNormSpec):
                embeddings = self._modules[position](embeddings)
            elif isinstance(step, NormalizeSpec):
                embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
            elif not isinstance(step, DropoutSpec):  # dropout is the identity at inference
                raise TypeError(f"Unknown module step {step!r}.")
        return embeddings

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        max_seq_length: int,
        similarity_fn_name: str,
        normalize: bool = False,
        prompt: str | None = None,
        prompts: dict[str, str] | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        """Write the model as a sentence-transformers model folder.

        Parameters
        ----------
        path : str or path-like
            Target folder, created if needed.
        max_seq_length : int
            Written to ``sentence_bert_config.json`` (for a Router: to every
            route's, unless it is the Router's own limit).
        similarity_fn_name : str
            Written to ``config_sentence_transformers.json``.
        normalize : bool, default=False
            Append a Normalize module unless the model already ends with one.
        prompt : str, optional
            Saved as the default prompt ``"skembed"``.
        prompts : dict of str to str, optional
            Saved with the model's prompts, replacing those of the same names.
        truncate_dim : int, optional
            Written to ``config_sentence_transformers.json``, where the reference
            library reads it too.
        """
        import transformers

        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        folders = write_folder_configs(
            self._saved_spec(normalize, prompt, prompts, max_seq_length),
            target,
            hidden_size=self.hidden_size,
            max_seq_length=max_seq_length,
            similarity_fn_name=similarity_fn_name,
            versions={
                "skembed": _skembed_version(),
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            route_hidden_sizes={name: route.hidden_size for name, route in self.routes.items()},
            truncate_dim=truncate_dim,
        )
        self._save_weights(folders[None])
        for name, route in self.routes.items():
            route._save_weights(folders[name])

    def _float32_transformer(self) -> torch.nn.Module:
        # A half-precision copy would save rounded weights: save the float32 original.
        if self.dtype == torch.float32:
            return self.model
        return self._load_transformer(torch.device("cpu"), torch.float32)

    def _saved_spec(
        self,
        normalize: bool,
        prompt: str | None,
        prompts: dict[str, str] | None,
        max_seq_length: int,
    ) -> FolderSpec:
        """The folder spec with a final Normalize, prompts and each route's limit, as asked."""
        steps = self.spec.steps
        if normalize and not (steps and isinstance(steps[-1], NormalizeSpec)):
            steps = (*steps, NormalizeSpec())
        new_prompts = {**self.spec.prompts, **(prompts or {})}
        default_prompt_name = self.spec.default_prompt_name
        if prompt is not None:
            new_prompts, default_prompt_name = {**new_prompts, "skembed": prompt}, "skembed"
        router = self.spec.router
        if router is not None:
            limit = None if max_seq_length == self.default_max_seq_length else max_seq_length
            routes = {
                name: replace(
                    route.spec,
                    max_seq_length=None
                    if route.spec.static_embedding is not None
                    else limit or route.default_max_seq_length,
                )
                for name, route in self.routes.items()
            }
            router = replace(router, routes=routes)
        return replace(
            self.spec,
            steps=steps,
            prompts=new_prompts,
            default_prompt_name=default_prompt_name,
            router=router,
        )

    def _save_weights(self, folders: list[Path]) -> None:
        """Write the input module's files into ``folders[0]`` and each step's weights after."""
        from safetensors.torch import save_file

        if self.spec.static_embedding is not None:
            weights = {"embedding.weight": self.model.embedding.weight.detach().cpu().contiguous()}
            save_file(weights, folders[0] / "model.safetensors")
            self._static_tokenizer.save(str(folders[0] / "tokenizer.json"))
        elif self.spec.router is None:
            with _quiet_transformers():
                self._float32_transformer().save_pretrained(folders[0])
            self.tokenizer.save_pretrained(folders[0])
        # The layout numbers step folders by position: weights go where the configs went.
        for position, module in self._modules.items():
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                folders[position + 1] / "model.safetensors",
            )


def _check_complete(model: torch.nn.Module, loading: dict[str, Any], source: Path) -> None:
    """Refuse a transformer whose weights files leave parameters to random initialisation.

    Such a model gives different vectors in every process under one fingerprint. Weights
    the model does not use (the heads of a pretraining checkpoint) are ignored, as the
    reference does; so is a missing pooler, whose output no embedding reads.
    """
    pooler = getattr(model, "pooler", None)
    unread = {f"pooler.{name}" for name, _ in pooler.named_parameters()} if pooler else set()
    missing = sorted(set(loading.get("missing_keys", ())) - unread)
    mismatched = sorted(str(key) for key in loading.get("mismatched_keys", ()))
    if missing or mismatched:
        shown = missing[:8] + mismatched[:8]
        raise ValueError(
            f"The weights in {source} do not cover the model its config.json describes "
            f"(model_type {model.config.model_type!r}): {len(missing)} parameters missing, "
            f"{len(mismatched)} of another shape ({', '.join(shown)}"
            f"{', ...' if len(missing) + len(mismatched) > len(shown) else ''}); they would "
            "be initialised at random. Fix config.json or the weights."
        )


# Encoder-decoder configs whose encoder runs alone, by model type: the class that loads it.
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "longt5": "LongT5EncoderModel",
}


def _model_class(config, source: Path) -> type:
    """The transformers class that runs the encoder of ``config``."""
    import transformers

    # Keyed by model type, not by is_encoder_decoder: a saved encoder alone clears that flag.
    name = _ENCODER_CLASSES.get(config.model_type)
    if name is not None:
        return getattr(transformers, name)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{source / 'config.json'}: model_type {config.model_type!r} is an encoder-decoder "
            f"model; skembed runs the encoder of {sorted(_ENCODER_CLASSES)} only."
        )
    return transformers.AutoModel


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" bars: loading a model is not news."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def _skembed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skembed")
    except PackageNotFoundError:
        return "unknown"


DEFAULT_MAX_LOADED_MODELS = 4


class _LoadedModels:
    """The process-wide registry of loaded encoders: least recently used first out."""

    def __init__(self, max_models: int) -> None:
        self.entries: OrderedDict[tuple, Encoder] = OrderedDict()
        self.max_models = max_models
        self.lock = threading.Lock()

    def get(self, folder: Path, device: torch.device, trust_remote_code: bool, dtype) -> Encoder:
        # Keyed by content: a folder rewritten in place gets a new fingerprint, so a new load.
        fingerprint = folder_fingerprint(folder)
        key = (str(folder), fingerprint, str(device), str(dtype), trust_remote_code)
        with self.lock:
            encoder = self.entries.get(key)
            if encoder is None:
                # Older contents of the same folder are stale: nothing new may share them.
                for stale in [k for k in self.entries if k[0] == key[0] and k[1] != fingerprint]:
                    del self.entries[stale]
                encoder = Encoder(folder, device, trust_remote_code, dtype)
                key = (str(folder), encoder.fingerprint, *key[2:])
                self.entries[key] = encoder
            self.entries.move_to_end(key)
            self._evict()
            return encoder

    def _evict(self) -> None:
        while len(self.entries) > self.max_models:
            self.entries.popitem(last=False)


_LOADED = _LoadedModels(DEFAULT_MAX_LOADED_MODELS)


def load_encoder(
    folder: Path,
    device: torch.device,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Encoder:
    """Return the process-wide encoder for (folder contents, device, dtype), loading it once.

    Clones of an estimator, and estimators with the same model, share one copy
    of the weights. The registry is keyed by the folder's fingerprint, so a
    folder rewritten in place is loaded again, and it holds at most
    :func:`set_max_loaded_models` models, dropping the least recently used.
    """
    return _LOADED.get(folder, device, trust_remote_code, dtype)


def set_max_loaded_models(n: int) -> None:
    """Bound how many loaded models the process keeps for sharing.

    Parameters
    ----------
    n : int
        Most (folder, device, dtype) models kept, least recently used dropped
        first; default 4. ``0`` keeps none: every fit loads its own copy.
        A fitted estimator keeps its own model alive whatever this bound.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"The number of loaded models must be an integer >= 0, got {n!r}.")
    with _LOADED.lock:
        _LOADED.max_models = n
        _LOADED._evict()


def release_models() -> None:
    """Drop every shared loaded model.

    The memory of a model is freed once no fitted estimator holds it either
    (delete or refit those); the next fit loads it again.
    """
    with _LOADED.lock:
        _LOADED.entries.clear()


def loaded_models() -> list[dict[str, str]]:
    """The models the process keeps for sharing, least recently used first.

    Returns
    -------
    list of dict
        ``folder``, ``fingerprint``, ``device`` and ``dtype`` of each.
    """
    with _LOADED.lock:
        return [
            {"folder": folder, "fingerprint": fingerprint, "device": device, "dtype": dtype}
            for folder, fingerprint, device, dtype, _ in _LOADED.entries
        ]
