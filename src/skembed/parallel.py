"""Embedding on many processes: Dask, Ray Data, Spark and joblib workers.

:class:`BatchEmbedder` is one picklable callable for every engine: it holds a
fitted :class:`~skembed.SentenceEmbedder` (parameters and the model's
fingerprint, a few hundred bytes, never the weights), loads the model once per
worker process, and describes its output (:meth:`BatchEmbedder.meta` for Dask,
:meth:`BatchEmbedder.schema` for Arrow, Ray and Spark). ``SentenceEmbedder``
itself transforms Dask collections lazily through it.

See the "Scaling out" page of the documentation for the recipes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._deferred import DeferredEncoder

if TYPE_CHECKING:
    from ._embedder import SentenceEmbedder

__all__ = ["BatchEmbedder", "is_dask_collection", "transform_dask"]

_OUTPUTS = ("frame", "array", "column")


class BatchEmbedder:
    """Embed batches of texts in any process, loading the model once per process.

    Parameters
    ----------
    embedder : SentenceEmbedder
        A fitted embedder, copied as it is now: a later ``set_params`` or
        ``fit`` of it does not change what this callable computes (a lazy Dask
        result computes what ``transform`` meant when it was called). It
        travels to the workers as its parameters and the fingerprint of its
        model files; each worker finds the model folder again (the same path,
        or the same model name in its own cache) and refuses files whose
        fingerprint differs.
    column : str, default=None
        The text column of a batch that has several (a Ray batch carries
        every column of the dataset). ``None``: the batch is one column of
        texts.
    output : {"frame", "array", "column"}, default="frame"
        - ``"frame"``: a pandas DataFrame with the batch's index (a
          ``RangeIndex`` for a batch without one) and the embedder's
          ``get_feature_names_out()`` as float32 columns;
        - ``"array"``: a float32 ndarray of shape ``(n_texts, n_features_out_)``
          (Spark's ``predict_batch_udf``);
        - ``"column"``: the batch (a pandas DataFrame or a dict of arrays, as
          Ray Data passes them) with a column ``"embedding"`` added, every
          other column kept.

    Examples
    --------
    >>> from skembed import SentenceEmbedder
    >>> from skembed.parallel import BatchEmbedder
    >>> embed = BatchEmbedder(SentenceEmbedder(device="cpu").fit(["a"]))  # doctest: +SKIP
    >>> embeddings = ddf["text"].map_partitions(embed, meta=embed.meta())  # doctest: +SKIP
    """

    def __init__(
        self, embedder: SentenceEmbedder, *, column: str | None = None, output: str = "frame"
    ) -> None:
        from ._embedder import SentenceEmbedder

        if not isinstance(embedder, SentenceEmbedder):
            raise TypeError(f"embedder must be a SentenceEmbedder, got {type(embedder).__name__}.")
        check_is_fitted(embedder)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {list(_OUTPUTS)}, got {output!r}.")
        if column is not None and not isinstance(column, str):
            raise TypeError(f"column must be a str or None, got {column!r}.")
        self.embedder = copy.deepcopy(embedder)
        self.column = column
        self.output = output

    @property
    def feature_names(self) -> np.ndarray:
        """The embedder's output column names, those of ``output="frame"``."""
        return self.embedder.get_feature_names_out()

    def warm_up(self) -> BatchEmbedder:
        """Load the model in this process now, so that the first batch does not wait for it.

        On Dask, ``client.run(embed.warm_up)`` loads it on every worker; as
        Spark's ``make_predict_fn`` it runs once per Python worker and returns
        the callable. The model is checked against the fitted fingerprint here.

        Returns
        -------
        BatchEmbedder
            ``self``.
        """
        encoder = self.embedder._get_encoder()
        if isinstance(encoder, DeferredEncoder):
            encoder.loaded()
        return self

    def meta(self, index: Any = None) -> Any:
        """An empty output of the right type, dtype and columns: Dask's ``meta``.

        Parameters
        ----------
        index : pandas.Index, default=None
            The index whose dtype the output keeps (a Dask Series'
            ``_meta.index``); ``None`` means a ``RangeIndex``.

        Returns
        -------
        pandas.DataFrame or ndarray
            A DataFrame with no rows for ``output="frame"``, a float32 array of
            shape ``(0, n_features_out_)`` for ``output="array"``.
        """
        empty = np.empty((0, self.embedder.n_features_out_), dtype=np.float32)
        if self.output == "array":
            return empty
        if self.output == "column":
            raise ValueError(
                "meta describes output='frame' or 'array'; with output='column' the batch's "
                "own columns come first."
            )
        import pandas as pd

        return pd.DataFrame(
            empty, columns=self.feature_names, index=None if index is None else index[:0]
        )

    def schema(self) -> Any:
        """The output as a pyarrow schema (Ray Data, Spark's Arrow transfers).

        Returns
        -------
        pyarrow.Schema
            One float32 field per feature name for ``output="frame"``; one
            field ``"embedding"``, a fixed-size list of float32, otherwise.
        """
        import pyarrow as pa

        if self.output == "frame":
            return pa.schema([(name, pa.float32()) for name in self.feature_names])
        return pa.schema([("embedding", pa.list_(pa.float32(), self.embedder.n_features_out_))])

    def __call__(self, batch: Any) -> Any:
        """Embed one batch.

        Parameters
        ----------
        batch : pandas Series or DataFrame, dict of arrays, list or ndarray of str
            The texts, or a table whose ``column`` holds them.

        Returns
        -------
        pandas.DataFrame, ndarray or dict
            As ``output`` says.
        """
        texts = self._texts(batch)
        embeddings = self.embedder._embed(self.embedder._texts(texts))
        if self.output == "array":
            return embeddings
        if self.output == "column":
            if isinstance(batch, dict):
                return {**batch, "embedding": embeddings}
            return batch.assign(embedding=list(embeddings))
        import pandas as pd

        return pd.DataFrame(
            embeddings, index=getattr(texts, "index", None), columns=self.feature_names
        )

    def _texts(self, batch: Any) -> Any:
        """The text column of a batch, checked against the column the embedder was fitted on."""
        if self.column is not None:
            if isinstance(batch, dict) or hasattr(batch, "columns"):
                names = list(batch.keys()) if isinstance(batch, dict) else list(batch.columns)
                if self.column not in names:
                    raise KeyError(
                        f"The batch has no column {self.column!r}; its columns are {names}."
                    )
                batch = batch[self.column]
            else:
                raise TypeError(
                    f"column={self.column!r} selects a column of a table batch (pandas "
                    f"DataFrame or dict of arrays), got a {type(batch).__name__}."
                )
        elif self.output == "column":
            raise ValueError("output='column' needs column=, the name of the text column.")
        elif isinstance(batch, dict):
            if len(batch) != 1:
                raise ValueError(
                    f"The batch has columns {list(batch)}; give column= to name the text column."
                )
            (batch,) = batch.values()
        self.embedder._check_columns(batch)
        return batch


def is_dask_collection(X: Any) -> bool:
    """Whether ``X`` is a Dask collection (array, Series, DataFrame), without importing Dask."""
    return callable(getattr(X, "__dask_graph__", None)) and not isinstance(X, type)


def transform_dask(embedder: SentenceEmbedder, X: Any) -> Any:
    """The lazy embeddings of a Dask collection, computed on the workers.

    Parameters
    ----------
    embedder : SentenceEmbedder
        Fitted.
    X : dask Series, one-column dask DataFrame, or dask array of shape (n,) or (n, 1)
        The texts.

    Returns
    -------
    dask DataFrame or dask array
        A DataFrame (input index, the embedder's feature names, float32) for
        a Series or DataFrame; a float32 array of shape
        ``(n, n_features_out_)``, chunked by rows as ``X``, for an array.
    """
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, dd.Series | dd.DataFrame):
        if isinstance(X, dd.DataFrame) and len(X.columns) != 1:
            raise ValueError(
                f"X is a dask DataFrame with columns {list(X.columns)}; transform takes one "
                "column of texts: select it, e.g. X[[name]] or X[name]."
            )
        embed = BatchEmbedder(embedder)
        embed._texts(X._meta)  # a wrong column is refused here, not on the workers
        return X.map_partitions(embed, meta=embed.meta(X._meta.index))
    if isinstance(X, da.Array):
        if X.ndim not in (1, 2) or (X.ndim == 2 and X.shape[1] != 1):
            raise ValueError(
                f"X is a dask array of shape {X.shape}; transform takes texts of shape (n,) "
                "or (n, 1)."
            )
        embed = BatchEmbedder(embedder, output="array")
        width = (embedder.n_features_out_,)
        return X.map_blocks(
            embed,
            dtype=np.float32,
            chunks=(X.chunks[0], width),
            meta=embed.meta(),
            **({"new_axis": 1} if X.ndim == 1 else {}),
        )
    raise TypeError(
        f"X is a {type(X).__module__}.{type(X).__name__}; SentenceEmbedder transforms a dask "
        "Series, a one-column dask DataFrame or a dask array of texts lazily. Convert other "
        "collections to one of those, or map skembed.parallel.BatchEmbedder over their "
        "partitions."
    )
