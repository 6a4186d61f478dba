"""skembed: sentence embeddings and semantic similarity as scikit-learn citizens.

The public names are re-exported from private implementation modules. Those that
need torch, transformers or scikit-learn are imported at first access, so that
``import skembed`` and ``skembed --help`` stay fast.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from ._similarity_function import SimilarityFunction
from ._warnings import TruncationWarning

__all__ = [
    "CommunityClusterer",
    "EmbeddingQuantizer",
    "FineTunedClassifier",
    "PairSimilarity",
    "PairedSimilarity",
    "SentenceEmbedder",
    "SentenceFineTuner",
    "SimilarityFunction",
    "TruncationWarning",
    "community_detection",
    "evaluate_sts",
    "paired_similarity",
    "pairwise_similarity",
    "paraphrase_mining",
    "semantic_search",
    "similarity",
]
__version__ = "0.2.0"

# Public name -> the private module that defines it.
_LAZY = {
    "CommunityClusterer": "._mining",
    "community_detection": "._mining",
    "paraphrase_mining": "._mining",
    "EmbeddingQuantizer": "._quantization",
    "SentenceEmbedder": "._embedder",
    "SentenceFineTuner": "._fine_tuning",
    "FineTunedClassifier": "._fine_tuned_classifier",
    "evaluate_sts": "._evaluation",
    "PairedSimilarity": "._pair_similarity",
    "paired_similarity": "._similarity",
    "semantic_search": "._similarity",
    "similarity": "._similarity",
}

# Names of skembed 0.1, kept as aliases until 0.4. In scikit-learn ``pairwise_*`` compares
# all pairs and ``paired_*`` row by row, so the row-by-row names now say "paired".
_DEPRECATED = {"pairwise_similarity": "paired_similarity", "PairSimilarity": "PairedSimilarity"}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        warnings.warn(
            f"skembed.{name} is deprecated since skembed 0.2 and will be removed in 0.4; use "
            f"skembed.{_DEPRECATED[name]}.",
            FutureWarning,
            stacklevel=2,
        )
        return __getattr__(_DEPRECATED[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'skembed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
