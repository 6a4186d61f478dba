"""Model loading and encoding: model folders in, float32 numpy embeddings out.

Nothing here knows scikit-learn; the estimators build on it.
"""

from ._chunking import CHUNK_POOLINGS, Chunking, WindowEmbeddings
from ._counters import work_counts
from ._encoder import Encoder
from ._fingerprint import folder_fingerprint
from ._folder import FolderSpec, read_folder, save_folder
from ._group import EncoderGroup, load_encoders
from ._loaded import load_encoder, loaded_models, release_models, set_max_loaded_models
from ._protocol import EncoderLike
from ._resolve import resolve_model_folder
from ._snapshot import FolderSnapshot
from ._types import EncodeResult, EncodeSettings
from .modules import precision_key

__all__ = [
    "CHUNK_POOLINGS",
    "Chunking",
    "EncodeResult",
    "EncodeSettings",
    "Encoder",
    "EncoderGroup",
    "EncoderLike",
    "FolderSnapshot",
    "FolderSpec",
    "WindowEmbeddings",
    "folder_fingerprint",
    "load_encoder",
    "load_encoders",
    "loaded_models",
    "precision_key",
    "read_folder",
    "release_models",
    "resolve_model_folder",
    "save_folder",
    "set_max_loaded_models",
    "work_counts",
]
