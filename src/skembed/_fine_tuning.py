"""SentenceFineTuner: a SentenceEmbedder whose fit fine-tunes the model on labelled data."""

from __future__ import annotations

import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._constraints import PositiveCount
from ._embedder import SentenceEmbedder
from ._inputs import as_text_pairs, as_texts, check_texts_or_pairs
from ._options import DEFAULT_MODEL
from ._similarity import SimilarityFunction
from .encoder import Encoder, EncoderGroup, EncodeSettings, FolderSnapshot
from .training import LOSSES, TrainingSettings, check_targets, label_pairs, train_pairs

__all__ = ["SentenceFineTuner"]

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


class SentenceFineTuner(SentenceEmbedder):
    """A :class:`SentenceEmbedder` whose :meth:`fit` fine-tunes the model.

    :meth:`fit` trains the model's modules on what it is given, then
    :meth:`transform` encodes with the trained weights; everything else is
    :class:`SentenceEmbedder` (caching, ``memory=``, :meth:`score`,
    :meth:`save`, ``set_output``). A plain ``SentenceEmbedder`` never trains:
    fine-tuning is this estimator only.

    - **Text pairs with scores** (regression: STS-style data): ``X`` holds two
      text columns and ``y`` a score per pair. The loss compares the cosine of
      each pair's embeddings with its score.
    - **Labelled texts** (classification): ``X`` is one text column and ``y``
      a label per text. Pairs are drawn from the labels as SetFit does
      (``pairs_per_text`` per text, half with a text of the same label, target
      1, half with texts of other labels, target 0) and trained on as above.
      :class:`~skembed.FineTunedClassifier` adds a classification head.

    Training follows the reference library's ``SentenceTransformerTrainer``
    step for step: AdamW (no weight decay on biases and layer norms),
    a linear warmup then linear decay of the learning rate, gradients clipped
    to norm 1, a random order of the pairs per epoch drawn from
    ``random_state``. It is deterministic for a ``random_state`` on the CPU.

    **Identity.** The trained model is written to a folder of its own, and
    ``model_fingerprint_`` is the hash of its files, trained weights
    included: the embedding caches and the ``memory=`` store key vectors by
    it, so a fine-tuned estimator never gets the base model's vectors or
    another candidate's. A pickle (``joblib.dump``) carries the trained
    model's files (about the size of the model) and checks them against the
    fingerprint when loaded; :meth:`save` writes a folder that
    ``sentence_transformers.SentenceTransformer`` loads.

    Parameters
    ----------
    model_name_or_path : str or path-like, default="sentence-transformers/all-MiniLM-L6-v2"
        The model to start from; see :class:`SentenceEmbedder` for this and the
        other parameters it shares (``similarity_fn_name`` to ``memory``, and
        ``long_text`` to ``chunk_pooling``). The token limit, prompt and
        ``role`` apply to training as to encoding; ``long_text`` applies to
        encoding only (training reads each text's first ``max_seq_length``
        tokens).
    loss : {"cosent", "cosine", "contrastive"}, default="cosent"
        The reference library's ``CoSENTLoss`` (scale 20: ranks the pairs of a
        batch by score; any scale of scores), ``CosineSimilarityLoss`` (mean
        squared error of the cosine to the score; scores in [-1, 1]) or
        ``ContrastiveLoss`` (cosine distance, margin 0.5; labels 0 or 1).
    epochs : int, default=1
        Passes over the training pairs.
    learning_rate : float, default=5e-5
        Peak learning rate of AdamW.
    train_batch_size : int, default=8
        Pairs per training step (``batch_size`` is the encoding batch).
    warmup : float, default=0.0
        Steps of linear warmup: a ratio of the training steps when below 1,
        else a number of steps.
    weight_decay : float, default=0.0
        AdamW weight decay (not applied to biases and layer norms).
    max_steps : int, default=None
        Stop after this many steps (it then sets the schedule's length).
    random_state : int, default=42
        Seed of the pairs' order, dropout, the pairs drawn from labels and
        the validation split.
    pairs_per_text : int, default=10
        Pairs drawn per text when fitting on labelled texts.
    logging_steps : int, default=10
        Steps per entry of ``history_``.
    validation_fraction : float, default=None
        Fraction of the pairs held out to compute a validation loss at each
        logging step; ``None`` holds none out.
    n_iter_no_change : int, default=None
        With ``validation_fraction``: stop when the validation loss has not
        improved for this many logging steps, and keep the best weights.
    mixed_precision : {"auto", "no", "fp16", "bf16"}, default="auto"
        Autocast precision of training on CUDA (``"auto"``: bfloat16 where
        supported, else float16 with loss scaling); the CPU trains in float32.
    show_progress_bar : bool, default=None
        A bar over the training steps (and over the texts when encoding);
        ``None`` shows the training bar when stderr is a terminal.

    Attributes
    ----------
    history_ : list of dict
        Per logging step: ``step``, ``epoch``, ``loss`` (the mean training
        loss since the last entry), ``learning_rate`` and, with a validation
        split, ``validation_loss``. ``pandas.DataFrame(history_)`` tabulates it.
    n_steps_ : int
        Training steps run.
    best_step_ : int or None
        With early stopping, the step whose weights were kept.
    base_model_fingerprint_ : str
        Fingerprint of the model training started from.
    model_fingerprint_ : str
        Fingerprint of the trained model's files.
    model_folder_ : str
        A temporary folder holding the trained model (removed with the estimator).

    See :class:`SentenceEmbedder` for the other fitted attributes.

    See Also
    --------
    skembed.FineTunedClassifier : Fine-tunes, then fits a classifier on the embeddings.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skembed import SentenceFineTuner
    >>> from skembed.datasets import load_stsb
    >>> train = load_stsb("train").head(200)
    >>> search = GridSearchCV(
    ...     SentenceFineTuner(device="cpu", max_steps=10),
    ...     {"learning_rate": [2e-5, 5e-5], "loss": ["cosent", "cosine"]},
    ... )
    >>> search.fit(train[["sentence1", "sentence2"]], train["score"] / 5)  # doctest: +SKIP
    """

    _parameter_constraints: ClassVar[dict] = {
        **SentenceEmbedder._parameter_constraints,
        "show_progress_bar": ["boolean", None],
        "loss": [StrOptions(set(LOSSES))],
        "epochs": [PositiveCount()],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "train_batch_size": [PositiveCount()],
        "warmup": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_steps": [PositiveCount(), None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "pairs_per_text": [Interval(Integral, 2, None, closed="left")],
        "logging_steps": [PositiveCount()],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [PositiveCount(), None],
        "mixed_precision": [StrOptions(set(MIXED_PRECISION))],
    }

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        loss: str = "cosent",
        epochs: int = 1,
        learning_rate: float = 5e-5,
        train_batch_size: int = 8,
        warmup: float = 0.0,
        weight_decay: float = 0.0,
        max_steps: int | None = None,
        random_state: int = 42,
        pairs_per_text: int = 10,
        logging_steps: int = 10,
        validation_fraction: float | None = None,
        n_iter_no_change: int | None = None,
        mixed_precision: str = "auto",
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
        show_progress_bar: bool | None = None,
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
        super().__init__(
            model_name_or_path,
            similarity_fn_name=similarity_fn_name,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            max_seq_length=max_seq_length,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
            prompt=prompt,
            prompt_name=prompt_name,
            prompts=prompts,
            role=role,
            show_progress_bar=show_progress_bar,
            trust_remote_code=trust_remote_code,
            revision=revision,
            cache_folder=cache_folder,
            missing=missing,
            memory=memory,
            long_text=long_text,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            chunk_pooling=chunk_pooling,
        )
        self.loss = loss
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.train_batch_size = train_batch_size
        self.warmup = warmup
        self.weight_decay = weight_decay
        self.max_steps = max_steps
        self.random_state = random_state
        self.pairs_per_text = pairs_per_text
        self.logging_steps = logging_steps
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.mixed_precision = mixed_precision

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> SentenceFineTuner:
        """Fine-tune the model on text pairs with scores, or on labelled texts.

        Parameters
        ----------
        X : text pairs, or texts
            Two text columns (a two-column DataFrame, an ``(n, 2)`` array, a
            list of 2-tuples), or one column of texts.
        y : array-like of shape (n,)
            A score per pair (in the range of ``loss``), or a label per text.

        Returns
        -------
        self : SentenceFineTuner

        Raises
        ------
        ValueError
            If ``X`` is empty, ``y`` is missing or of another length, a score
            is outside the loss's range, or the texts have a single label.
        """
        first, second, targets, pairs = self._training_pairs(X, y)
        # Fitted on pairs, it transforms texts: only a text column is recorded as its input.
        super().fit(X if not pairs else None)
        devices, _ = self._placement()
        # A model of its own, in float32: training changes its weights, and the shared one is
        # used by every estimator of the base model.
        model = Encoder(Path(self.model_folder_), devices[0], self.trust_remote_code)
        result = train_pairs(
            model,
            first,
            second,
            targets,
            self._training_settings(),
            EncodeSettings(self.max_seq_length_, self.prompt_, task=self.role),
            self.show_progress_bar,
        )
        self._trained = FolderSnapshot(lambda folder: _quietly(model.save, folder))
        self.history_ = result.history
        self.n_steps_ = result.n_steps
        self.best_step_ = result.best_step
        self.base_model_fingerprint_ = self.model_fingerprint_
        self.model_fingerprint_ = self._trained.fingerprint
        del self._encoder
        self._get_encoder()  # the trained model, as the caches will know it
        return self

    def _training_settings(self) -> TrainingSettings:
        return TrainingSettings(
            loss=self.loss,
            epochs=self.epochs,
            learning_rate=float(self.learning_rate),
            batch_size=self.train_batch_size,
            warmup=float(self.warmup),
            weight_decay=float(self.weight_decay),
            max_steps=self.max_steps,
            seed=self.random_state,
            logging_steps=self.logging_steps,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            mixed_precision=self.mixed_precision,
        )

    def _training_pairs(self, X: Any, y: Any) -> tuple[list[str], list[str], np.ndarray, bool]:
        """The pairs to train on, their targets, and whether ``X`` held pairs."""
        name = type(self).__name__
        if y is None:
            raise ValueError(
                f"{name}.fit needs y: a score per text pair, or a label per text. To embed "
                "without training, use SentenceEmbedder."
            )
        pairs = check_texts_or_pairs(X) == 2
        if pairs:
            first, second = as_text_pairs(X)
        else:
            first = second = as_texts(X)
        what = "text pairs" if pairs else "texts"
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(first):
            raise ValueError(
                f"X has {len(first)} {what} but y has shape {y.shape}; expected one value per "
                f"row, shape ({len(first)},)."
            )
        if len(first) < 2:
            raise ValueError(f"{name}.fit needs at least 2 {what}; X has {len(first)}.")
        if not pairs:
            rows_a, rows_b, targets = label_pairs(y, self.pairs_per_text, self.random_state)
            return [first[i] for i in rows_a], [first[i] for i in rows_b], targets, False
        try:
            targets = y.astype(np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                f"y must hold a numeric score per text pair; got values of dtype {y.dtype} "
                f"(such as {y[0]!r}). For labelled texts, give X one column of texts."
            ) from None
        check_targets(self.loss, targets)
        return first, second, targets, True

    def _get_encoder(self) -> Encoder | EncoderGroup:
        check_is_fitted(self)
        if self.__dict__.get("_encoder") is None:
            # Unpickled: the snapshot wrote the trained files back and checked them.
            if self._trained.fingerprint != self.model_fingerprint_:
                raise ValueError(
                    f"The trained model files have fingerprint {self._trained.fingerprint[:12]}, "
                    f"not {self.model_fingerprint_[:12]} as when this estimator was fitted; "
                    "fit it again."
                )
            self._load(self._trained.folder)
            self.model_folder_ = str(self._trained.folder)
        return self._encoder

    def _reset(self) -> None:
        super()._reset()
        self.__dict__.pop("_trained", None)


def _quietly(save: Any, folder: Path) -> None:
    """Save without transformers' progress bar (one per fit would crowd a grid search)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        save(folder)
    finally:
        if shown:
            logging.enable_progress_bar()
