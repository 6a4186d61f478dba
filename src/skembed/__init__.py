"""skembed: sentence embeddings and semantic similarity as scikit-learn citizens."""

from .embedder import SentenceEmbedder
from .pair_similarity import PairSimilarity
from .similarity import SimilarityFunction, pairwise_similarity, semantic_search, similarity

__all__ = [
    "PairSimilarity",
    "SentenceEmbedder",
    "SimilarityFunction",
    "pairwise_similarity",
    "semantic_search",
    "similarity",
]
__version__ = "0.1.0"
