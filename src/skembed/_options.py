"""Choices of the estimator parameters, shared by the estimators and the command line.

Only the standard library is imported here, so that ``skembed --help`` can list the
choices without loading torch, transformers or scikit-learn.
"""

from __future__ import annotations

__all__ = [
    "CHUNK_POOLINGS",
    "DEFAULT_MODEL",
    "DTYPES",
    "DTYPE_CHOICES",
    "LONG_TEXT_POLICIES",
    "MISSING_POLICIES",
    "ROLES",
    "allows_missing",
]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Precisions the transformer can run in; "auto" picks one by device. "int8" means int8
# matrix products (BERT encoders on the CPU only).
DTYPES = ("float32", "float16", "bfloat16", "int8")
DTYPE_CHOICES = ("auto", *DTYPES)

# What becomes of a missing text (None, NaN, pandas.NA): refused with its position,
# encoded as "", or given an all-zero embedding. The first is the default.
MISSING_POLICIES = ("error", "empty", "zero")

# What becomes of a text longer than the model's window: cut at the window (the default), or
# encoded whole as several windows whose embeddings are combined.
LONG_TEXT_POLICIES = ("truncate", "chunk")

# How the window embeddings of a text are combined: their mean weighted by the text's tokens
# each window holds, their element-wise maximum, or the first window's.
CHUNK_POOLINGS = ("mean", "max", "first")

# What texts can be for asymmetric models: each names the prompt it picks and the Router
# route it takes, as the reference's encode_query / encode_document do.
ROLES = ("query", "document")


def allows_missing(policy: str) -> bool:
    """Whether the ``missing`` policy lets missing texts through to encoding."""
    return policy != MISSING_POLICIES[0]
