"""Model loading and encoding: model folders in, float32 numpy embeddings out.

Nothing here knows scikit-learn; the estimators build on it.
"""

from ._encoder import Encoder, EncodeResult, folder_fingerprint, load_encoder
from ._folder import FolderSpec, read_folder
from ._group import EncoderGroup, load_encoders
from ._resolve import resolve_model_folder

__all__ = [
    "EncodeResult",
    "Encoder",
    "EncoderGroup",
    "FolderSpec",
    "folder_fingerprint",
    "load_encoder",
    "load_encoders",
    "read_folder",
    "resolve_model_folder",
]
