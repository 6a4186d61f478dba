"""SentenceEmbedder: a scikit-learn transformer from texts to sentence embeddings."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from ._constraints import PositiveCount
from ._deferred import DeferredEncoder
from ._device import resolve_devices, resolve_dtype
from ._evaluation import spearman_score
from ._inputs import (
    TextInputMixin,
    as_text_pairs,
    as_texts,
    check_texts_or_pairs,
    column_names,
    embed_pairs,
    looks_like_text,
)
from ._long_text import LONG_TEXT_CONSTRAINTS, LongTextMixin
from ._model_card import model_card
from ._model_settings import (
    checked_max_seq_length,
    checked_model_metric,
    checked_prompt,
    checked_truncate_dim,
    truncated,
)
from ._options import DEFAULT_MODEL, DTYPE_CHOICES, MISSING_POLICIES, ROLES, allows_missing
from ._similarity import SimilarityFunction, paired_similarity, similarity
from .cache import DiskEmbeddingStore, encode_cached, open_store
from .encoder import (
    Encoder,
    EncoderGroup,
    EncodeSettings,
    folder_fingerprint,
    load_encoders,
    resolve_model_folder,
)
from .parallel import is_dask_collection, transform_dask

__all__ = ["SentenceEmbedder"]


class SentenceEmbedder(LongTextMixin, TextInputMixin, TransformerMixin, BaseEstimator):
    """Encode texts into sentence embeddings with a transformer model.

    A scikit-learn transformer that reproduces sentence-transformers'
    ``SentenceTransformer.encode`` on the same model folder. Nothing is
    learned: :meth:`fit` validates the parameters and loads the model (once
    per process, shared by clones); :meth:`transform` encodes.

    Embeddings go through an in-process cache shared by all estimators (see
    :mod:`skembed.cache`): a text is encoded once per model and settings, so
    clones, cross-validation folds and grid-search candidates reuse it.

    Parameters
    ----------
    model_name_or_path : str or path-like, default="sentence-transformers/all-MiniLM-L6-v2"
        A sentence-transformers model folder, a plain Hugging Face checkpoint,
        or a Hugging Face model id (from the local cache or the hub).
    similarity_fn_name : {"cosine", "dot", "euclidean", "manhattan"} or SimilarityFunction, \
default=None
        Metric of :meth:`similarity`, :meth:`similarity_pairwise` and
        :meth:`score`, and of a :class:`~skembed.PairedSimilarity` around
        this embedder. ``None`` means the model's saved
        ``similarity_fn_name``, else cosine. It never changes the embeddings
        that :meth:`transform` returns: searched in front of another
        estimator (``Pipeline([embedder, classifier])``) it changes nothing;
        search it on :meth:`score` or through ``PairedSimilarity``.
    device : str, torch.device, list of them or "all", default=None
        ``None`` picks CUDA, else MPS, else the CPU. A list (or ``"all"``,
        every CUDA GPU) spreads the texts across several devices.
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}, default="auto"
        Precision of the transformer: ``"auto"`` is float16 on CUDA and float32 elsewhere.
        On a CPU with bfloat16 units (AVX512-BF16 or AMX) bfloat16 ran 2.5-3.4x faster than
        float32 at a cosine of > 0.999 to it; without them torch emulates bfloat16, which is
        slower than float32, and a warning says so (once per process). ``"int8"`` (CPU
        only, BERT encoders such as all-MiniLM-L6-v2; refused otherwise) runs the linear
        layers as int8 products with activation ranges calibrated once on fixed texts:
        faster than float32, STSb Spearman within 0.5 points, but single vectors move
        (cosine to float32 down to about 0.96): choose it for throughput on large corpora,
        not where vectors must match float32 ones. A text's vector never depends on its batch.
    batch_size : int, default=None
        Most texts per forward pass; ``None`` means 4096, except 64 on the CPU
        for models other than BERT encoders.
    max_batch_tokens : int, default=None
        Most padded tokens per forward pass (texts x longest text), so long
        texts make small batches and short texts large ones; ``None`` means
        4096 on the CPU and 262144 on accelerators. BERT encoders on the CPU
        run their real tokens only, with no padding: there it bounds the real
        tokens.
    max_seq_length : int, default=None
        Token limit per text; ``None`` means the model's. Longer texts are
        truncated (``long_text="truncate"``), with a warning that names them;
        :meth:`count_tokens` gives every text's count. A StaticEmbedding model
        reads whole texts and refuses a limit; a Router applies one to its
        transformer routes.
    long_text : {"truncate", "chunk"}, default="truncate"
        What happens to a text longer than the window: ``"truncate"`` keeps
        its first ``max_seq_length`` tokens (the reference library's way);
        ``"chunk"`` encodes all of it, as windows of ``chunk_tokens`` tokens
        cut from one tokenization of the text (each with the special tokens
        and the prompt, the prompt left out of the pooling when the model says
        so), and combines their embeddings (the model's whole pipeline, a
        Normalize module included, per window) by ``chunk_pooling``; then
        ``normalize_embeddings`` applies. A text that fits one window gets the
        same embedding either way. Part of the cache key.
    chunk_tokens : int, default=None
        Most tokens per window, prompt and special tokens included; ``None``
        means ``max_seq_length_``, the most allowed.
    chunk_overlap : int, default=0
        Tokens of the text two consecutive windows share.
    chunk_pooling : {"mean", "max", "first"}, default="mean"
        How the windows' embeddings make the text's: their mean weighted by
        the text's tokens each holds, their element-wise maximum, or the first
        window's.
    normalize_embeddings : bool, default=False
        L2-normalise the embeddings (after ``truncate_dim``, as the reference
        library does).
    truncate_dim : int, default=None
        Keep the first ``truncate_dim`` embedding columns (Matryoshka models
        are trained for it). ``None`` means the model's saved ``truncate_dim``,
        else all columns. As in the reference library, the cut comes after
        the model's modules (a Normalize module included, so the rows are then
        not unit length) and before ``normalize_embeddings``. A value above
        the model's embedding size is refused. Truncating reuses the cached
        full embeddings, so a grid search over it encodes each text once.
    prompt : str, default=None
        Text prepended to every input.
    prompt_name : str, default=None
        Name of a prompt of ``prompts_``. ``None`` uses the prompt of
        ``role`` when it is set, else the model's default prompt, if it has one.
    prompts : dict of str to str, default=None
        Prompts by name, added to those saved with the model (replacing those
        of the same name), as ``SentenceTransformer(prompts=...)`` does. For
        example ``{"query": "query: ", "document": "passage: "}``.
    role : {"query", "document"}, default=None
        What the texts are, for models that encode queries and documents
        differently. ``"query"`` makes this estimator the reference's
        ``encode_query``: unless ``prompt`` or ``prompt_name`` is given it uses
        the ``"query"`` prompt (empty when the model has none, never the
        default prompt), and a model with a Router encodes through its query
        route. ``"document"`` likewise makes it ``encode_document``. ``None``
        is ``encode``: the default prompt, and the Router's default route.
    show_progress_bar : bool, default=False
        Show a progress bar on stderr while encoding. It counts the input
        texts, those found in a cache and repeats included.
    trust_remote_code : bool, default=False
        Allow custom code from the model folder to run.
    revision : str, default=None
        Hub revision of the model.
    cache_folder : str or path-like, default=None
        Hugging Face cache folder.
    missing : {"error", "empty", "zero"}, default="error"
        What to do with a missing text (None, NaN, pandas.NA): raise an error
        naming its position, encode it as the empty string, or give it an
        all-zero embedding.
    memory : str, path-like, joblib.Memory or DiskEmbeddingStore, default=None
        Persistent embedding store shared across processes and sessions.
        A folder holds the store file; a ``joblib.Memory`` keeps it inside its
        own cache folder, so ``memory.clear()`` deletes it (a Memory without a
        location stores nothing); a :class:`~skembed.cache.DiskEmbeddingStore`
        is used as is, e.g. ``DiskEmbeddingStore(folder, max_bytes=2**30)`` to
        bound its size. Stored rows are checked on read; a damaged row is
        encoded again. A store that cannot be written warns once and is still
        read. ``""`` is refused. ``None`` keeps embeddings in the in-process
        cache only.

    Attributes
    ----------
    model_folder_ : str
        The local folder the model was loaded from.
    model_fingerprint_ : str
        SHA-256 of the model files; a reloaded estimator checks it.
    device_ : str or list of str
        The device(s) the model runs on.
    dtype_ : str
        The precision the transformer runs in.
    n_features_out_ : int
        Embedding size, after ``truncate_dim``.
    truncate_dim_ : int or None
        The ``truncate_dim`` in effect (the parameter, else the model's).
    max_seq_length_ : int
        Effective token limit.
    chunk_tokens_ : int
        Effective window of :meth:`transform_chunks` and ``long_text="chunk"``.
    prompt_ : str or None
        Effective prompt.
    prompts_ : dict of str to str
        The prompts in effect: ``"query"`` and ``"document"`` (empty unless
        set), the model's saved prompts, then ``prompts``.
    model_similarity_fn_name_ : str or None
        ``similarity_fn_name`` saved with the model.
    n_features_in_ : int
        Number of text columns seen in :meth:`fit` (1 for texts, 2 for pairs).
    feature_names_in_ : ndarray of str
        Column names seen in :meth:`fit`, when it had named columns (a frame
        or a named Series).

    See Also
    --------
    skembed.similarity : Similarity between embeddings.

    Examples
    --------
    >>> from skembed import SentenceEmbedder
    >>> embedder = SentenceEmbedder(device="cpu").fit(["warm-up"])  # doctest: +SKIP
    >>> embedder.transform(["The weather is lovely today."]).shape  # doctest: +SKIP
    (1, 384)
    """

    _parameter_constraints: ClassVar[dict] = {
        "model_name_or_path": [str, os.PathLike],
        # Any str or Enum here (sentence-transformers' members are a plain Enum); fit names
        # an unknown metric, and refuses the reference's MaxSim with the reason.
        "similarity_fn_name": [str, Enum, None],
        "device": [str, torch.device, list, tuple, None],
        "dtype": [StrOptions(set(DTYPE_CHOICES))],
        "batch_size": [PositiveCount(), None],
        "max_batch_tokens": [PositiveCount(), None],
        "max_seq_length": [PositiveCount(), None],
        "normalize_embeddings": ["boolean"],
        "truncate_dim": [PositiveCount(), None],
        "prompt": [str, None],
        "prompt_name": [str, None],
        "prompts": [dict, None],
        "role": [StrOptions(set(ROLES)), None],
        "show_progress_bar": ["boolean"],
        "trust_remote_code": ["boolean"],
        "revision": [str, None],
        "cache_folder": [str, os.PathLike, None],
        "missing": [StrOptions(set(MISSING_POLICIES))],
        "memory": [str, os.PathLike, joblib.Memory, DiskEmbeddingStore, None],
        **LONG_TEXT_CONSTRAINTS,
    }

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        similarity_fn_name: str | SimilarityFunction | None = None,
        device: str | torch.device | list | None = None,
        dtype: str = "auto",
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        max_seq_length: int | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        prompt: str | None = None,
        prompt_name: str | None = None,
        prompts: dict[str, str] | None = None,
        role: str | None = None,
        show_progress_bar: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        cache_folder: str | os.PathLike[str] | None = None,
        missing: str = "error",
        memory: Any = None,
        long_text: str = "truncate",
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
        chunk_pooling: str = "mean",
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.similarity_fn_name = similarity_fn_name
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_seq_length = max_seq_length
        self.normalize_embeddings = normalize_embeddings
        self.truncate_dim = truncate_dim
        self.prompt = prompt
        self.prompt_name = prompt_name
        self.prompts = prompts
        self.role = role
        self.show_progress_bar = show_progress_bar
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.cache_folder = cache_folder
        self.missing = missing
        self.memory = memory
        self.long_text = long_text
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.chunk_pooling = chunk_pooling

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> SentenceEmbedder:
        """Validate the parameters and load the model.

        Parameters
        ----------
        X : texts or text pairs, default=None
            Checked for well-formed text (one column of texts, or two columns
            of text pairs), not learned from.
        y : ignored

        Returns
        -------
        self : SentenceEmbedder
        """
        self._reset()
        if self.similarity_fn_name is not None:
            try:
                SimilarityFunction(self.similarity_fn_name)
            except ValueError as exc:
                raise ValueError(f"similarity_fn_name: {exc}") from None
        if X is not None:
            self._record_input(X)
        self._store()  # refuses a malformed memory= before the model is loaded
        folder = resolve_model_folder(
            self.model_name_or_path, revision=self.revision, cache_folder=self.cache_folder
        )
        encoder = self._load(folder)
        spec = encoder.spec
        self.model_folder_ = str(folder)
        self.model_fingerprint_ = encoder.fingerprint
        self.truncate_dim_ = checked_truncate_dim(self.truncate_dim, encoder, folder)
        self.n_features_out_ = self.truncate_dim_ or encoder.embedding_dimension
        self.max_seq_length_ = checked_max_seq_length(self.max_seq_length, encoder, folder)
        self.prompt_, self.prompts_ = checked_prompt(
            self.prompt, self.prompt_name, self.prompts, self.role, spec
        )
        self.model_similarity_fn_name_ = checked_model_metric(spec, folder)
        self._check_long_text(encoder, self._settings(chunked=False))
        return self

    def _reset(self) -> None:
        """Forget what an earlier fit learned, so a refit keeps nothing stale."""
        for attribute in [name for name in vars(self) if name.endswith("_")]:
            del self.__dict__[attribute]
        self.__dict__.pop("_encoder", None)

    def _record_input(self, X: Any) -> None:
        if is_dask_collection(X):
            # The empty pandas / numpy object of the same columns and dtypes: nothing is
            # computed in the driver; the texts themselves are checked on the workers.
            X = X._meta
        self.n_features_in_ = check_texts_or_pairs(X, allow_missing=allows_missing(self.missing))
        names = column_names(X)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)

    def _placement(self) -> tuple[list[torch.device], torch.dtype]:
        devices = resolve_devices(self.device)
        return devices, resolve_dtype(self.dtype, devices[0])

    def _load(self, folder: Any) -> Encoder | EncoderGroup:
        """Load (or reuse) the model on the configured devices; record where it runs."""
        devices, dtype = self._placement()
        encoder = load_encoders(folder, devices, self.trust_remote_code, dtype)
        names = [str(d) for d in devices]
        self.device_ = names[0] if len(names) == 1 else names
        self.dtype_ = str(dtype).removeprefix("torch.")
        self._encoder = encoder
        return encoder

    @property
    def similarity_fn_name_(self) -> str:
        """The metric in effect: the parameter, else the model's saved one, else cosine."""
        check_is_fitted(self)
        chosen = self.similarity_fn_name or self.model_similarity_fn_name_ or "cosine"
        return SimilarityFunction(chosen).value

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the embedding columns.

        Parameters
        ----------
        input_features : array-like of str, default=None
            The input column name. Defaults to the name seen in :meth:`fit`.

        Returns
        -------
        ndarray of str
            ``"<column>_<i>"`` when the input column has a name, else
            ``"sentenceembedder<i>"``.
        """
        check_is_fitted(self, "n_features_out_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        prefix = "sentenceembedder"
        if input_features is not None and len(input_features) == 1:
            prefix = f"{input_features[0]}_"
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], dtype=object)

    def _get_encoder(self) -> Encoder | EncoderGroup | DeferredEncoder:
        check_is_fitted(self)
        encoder = self.__dict__.get("_encoder")
        if encoder is None:
            # Unpickled (a worker, a reloaded file): the pickle holds no weights. Find the
            # model again and make sure it is the one this estimator was fitted with (a hash
            # of the files, no load); the cache key needs no weights, so the model is loaded
            # only if a text is in no cache.
            folder = resolve_model_folder(
                self.model_name_or_path, revision=self.revision, cache_folder=self.cache_folder
            )
            fingerprint = folder_fingerprint(folder)
            if fingerprint != self.model_fingerprint_:
                raise ValueError(
                    f"The model files at {folder} differ from those this estimator was fitted "
                    f"with (fingerprint {fingerprint[:12]} != {self.model_fingerprint_[:12]}); "
                    "fit it again."
                )
            self.model_folder_ = str(folder)
            devices, dtype = self._placement()
            # The loaded model is checked against the fingerprint again (the folder may be
            # replaced before a text needs it) and only then kept.
            load = lambda: load_encoders(folder, devices, self.trust_remote_code, dtype)  # noqa: E731
            encoder = DeferredEncoder(fingerprint, devices[0], dtype, self.n_features_out_, load)
            self._encoder = encoder
        return encoder

    def load_model(self) -> SentenceEmbedder:
        """Load the fitted model in this process now.

        An unpickled estimator (a pickle holds no weights) loads its model at the
        first text it has to encode; this loads it at once, checked against the
        fitted fingerprint.

        Returns
        -------
        self : SentenceEmbedder
        """
        check_is_fitted(self)
        encoder = self._get_encoder()
        if isinstance(encoder, DeferredEncoder):
            encoder.loaded()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_encoder", None)
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> SentenceEmbedder:
        # The copy's parameters and fitted state are its own; the loaded model, which no call
        # changes, is shared rather than copied.
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        twin.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        if "_encoder" in self.__dict__:
            twin._encoder = self._encoder
        return twin

    def _store(self) -> DiskEmbeddingStore | None:
        return open_store(self.memory)

    def _texts(self, X: Any, what: str = "X") -> list[str | None]:
        return as_texts(X, what, allow_missing=allows_missing(self.missing))

    def _settings(self, chunked: bool) -> EncodeSettings:
        """What the encoder is asked for (all of it part of the cache key)."""
        return EncodeSettings(
            max_seq_length=self.max_seq_length_,
            prompt=self.prompt_,
            # Normalising comes after the cut: the cache holds the full rows unnormalised.
            normalize_embeddings=self.normalize_embeddings and self.truncate_dim_ is None,
            task=self.role,
            chunking=self._chunking(chunked),
        )

    def _embed(self, texts: list[str | None]) -> np.ndarray:
        """Encode through the caches, missing texts as ``missing`` says; warn of cut texts."""
        # Rows with a text; None when every row has one (no per-text work for the usual case).
        present = [i for i, text in enumerate(texts) if text is not None] if None in texts else None
        if present is None:
            to_encode = texts
        elif self.missing == "zero":
            to_encode = [texts[i] for i in present]
        else:
            to_encode = [text if text is not None else "" for text in texts]
        result = encode_cached(
            self._get_encoder(),
            to_encode,
            self._settings(chunked=self.long_text == "chunk"),
            store=self._store(),
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            show_progress_bar=self.show_progress_bar,
        )
        embeddings = result.embeddings
        if self.truncate_dim_ is not None:
            embeddings = truncated(embeddings, self.truncate_dim_, self.normalize_embeddings)
        self._warn_truncated(result.truncated, present, len(texts))
        if present is None or self.missing != "zero":
            return embeddings
        out = np.zeros((len(texts), self.n_features_out_), dtype=np.float32)
        out[present] = embeddings
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Encode texts into embeddings.

        Parameters
        ----------
        X : list, tuple, 1-D array, Series or one-column DataFrame of str, or a Dask collection
            The texts. A bare string is refused: wrap it in a list. A dask
            Series, one-column dask DataFrame or dask array of texts is
            transformed lazily, on the workers that compute it.

        Returns
        -------
        ndarray of shape (n_texts, ``n_features_out_``), float32, or a Dask collection
            For a dask Series or DataFrame, a dask DataFrame with the input's
            index and :meth:`get_feature_names_out` as float32 columns; for a
            dask array, a float32 dask array chunked by rows as the input
            (see :func:`skembed.parallel.transform_dask`).
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            container = _get_output_config("transform", self)["dense"]
            if container != "default":
                # scikit-learn would turn the lazy result into a pandas/polars frame: in the driver.
                raise ValueError(
                    f"set_output(transform={container!r}) would compute the dask collection in "
                    "this process; the lazy result of a dask input is already a dask "
                    "DataFrame. Use set_output(transform='default'), or compute X first."
                )
            return transform_dask(self, X)
        self._check_columns(X)
        return self._embed(self._texts(X))

    def _as_embeddings(self, X: Any, what: str) -> Any:
        return self._embed(self._texts(X, what)) if looks_like_text(X) else X

    def similarity(self, X: Any, Y: Any = None) -> Any:
        """Similarity matrix under :attr:`similarity_fn_name_`.

        Parameters
        ----------
        X : texts or embeddings of shape (n_x, d)
            Texts are encoded first.
        Y : texts or embeddings of shape (n_y, d), default=None
            ``None`` compares ``X`` with itself.

        Returns
        -------
        ndarray or torch.Tensor of shape (n_x, n_y)
            See :func:`skembed.similarity`.
        """
        x = self._as_embeddings(X, "X")
        y = None if Y is None else self._as_embeddings(Y, "Y")
        return similarity(x, y, metric=self.similarity_fn_name_)

    def similarity_pairwise(self, X: Any, Y: Any = None) -> Any:
        """Row-by-row similarity under :attr:`similarity_fn_name_`.

        The reference library's ``similarity_pairwise``: row ``i`` of ``X``
        against row ``i`` of ``Y``. With ``Y=None``, ``X`` holds text pairs and
        each pair's two texts are compared (both encoded in one pass).

        Parameters
        ----------
        X : texts or embeddings of shape (n, d), or text pairs when ``Y`` is None
            Text pairs: a two-column DataFrame, an ``(n, 2)`` array or a list
            of 2-tuples.
        Y : texts or embeddings of shape (n, d), default=None

        Returns
        -------
        ndarray or torch.Tensor of shape (n,)
            float32 for texts; see :func:`skembed.paired_similarity` for
            embeddings.
        """
        if Y is None:
            check_is_fitted(self)
            pairs = as_text_pairs(X, allow_missing=allows_missing(self.missing))
            x, y = embed_pairs(*pairs, self._embed)
        else:
            x, y = self._as_embeddings(X, "X"), self._as_embeddings(Y, "Y")
        return paired_similarity(x, y, metric=self.similarity_fn_name_)

    def score(self, X: Any, y: Any, sample_weight: None = None) -> float:
        """Spearman correlation between pair similarities and gold scores.

        The STS evaluation of the reference library: each pair is scored with
        :attr:`similarity_fn_name_`, then ranked against ``y``.

        Parameters
        ----------
        X : text pairs
            Two-column DataFrame, ``(n, 2)`` array or list of 2-tuples.
        y : array-like of shape (n,)
            Gold similarity scores.
        sample_weight : None
            Not supported; present for the scikit-learn signature.

        Returns
        -------
        float
            Spearman's rho.
        """
        if sample_weight is not None:
            raise ValueError("SentenceEmbedder.score does not support sample_weight.")
        return spearman_score(self.similarity_pairwise(X), y)

    def pair_similarity(self, X: Any) -> np.ndarray:
        """Deprecated alias of ``similarity_pairwise(X)`` for text pairs.

        .. deprecated:: 0.2
            Use :meth:`similarity_pairwise`; removed in 0.4.

        Parameters
        ----------
        X : text pairs

        Returns
        -------
        ndarray of shape (n,), float32
        """
        warnings.warn(
            "SentenceEmbedder.pair_similarity(X) is deprecated since skembed 0.2 and will be "
            "removed in 0.4; use similarity_pairwise(X), which takes text pairs when Y is "
            "omitted.",
            FutureWarning,
            stacklevel=2,
        )
        return self.similarity_pairwise(X)

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        evaluation: Mapping[str, Mapping[str, float]] | None = None,
        evaluated_on: str | None = None,
    ) -> None:
        """Save the model as a sentence-transformers folder, with a model card.

        The folder records the effective ``similarity_fn_name``,
        ``max_seq_length`` and ``truncate_dim``, a Normalize module when
        ``normalize_embeddings`` is set, ``prompts`` with the model's prompts
        and a custom ``prompt`` as the default prompt, so that it reproduces
        this estimator's embeddings (``role`` is a choice made when encoding,
        as in the reference, and is not saved). The format cannot express
        normalising after truncation (its Normalize module runs before the
        cut), so ``truncate_dim`` with ``normalize_embeddings`` is refused.
        ``SentenceEmbedder(path)`` and
        ``sentence_transformers.SentenceTransformer(path)`` both load it.

        A short model card, ``README.md``, names the source model, the
        pooling, the similarity function, ``max_seq_length`` and the
        embedding size, and, when given, the STS figures.

        Parameters
        ----------
        path : str or path-like
            Target folder.
        evaluation : dict, default=None
            Figures from :func:`skembed.evaluate_sts` (``{metric: {"spearman":
            rho, "pearson": r}}``) to write in the model card.
        evaluated_on : str, default=None
            What ``evaluation`` was measured on, e.g. ``"STSb test"``.
        """
        encoder = self._get_encoder()
        if self.truncate_dim_ is not None and self.normalize_embeddings:
            raise ValueError(
                f"Cannot save truncate_dim={self.truncate_dim_} with normalize_embeddings=True: "
                "a saved model normalises before truncating, this estimator after. Save with "
                "normalize_embeddings=False and normalise when loading "
                "(SentenceEmbedder(path, normalize_embeddings=True))."
            )
        encoder.save(
            path,
            max_seq_length=self.max_seq_length_,
            similarity_fn_name=self.similarity_fn_name_,
            normalize=self.normalize_embeddings,
            prompt=self.prompt,
            prompts=self.prompts,
            truncate_dim=self.truncate_dim_,
        )
        card = model_card(
            source=str(self.model_name_or_path),
            # A StaticEmbedding or a Router input has no top-level Pooling.
            pooling=encoder.spec.pooling.modes if encoder.spec.pooling else (),
            similarity_fn_name=self.similarity_fn_name_,
            max_seq_length=self.max_seq_length_,
            n_features_out=self.n_features_out_,
            truncate_dim=self.truncate_dim_,
            evaluation=evaluation,
            evaluated_on=evaluated_on,
        )
        (Path(path) / "README.md").write_text(card, encoding="utf-8")
