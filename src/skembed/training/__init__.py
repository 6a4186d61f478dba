"""Fine-tuning the encoder's module pipeline: losses, training pairs and the training loop.

Nothing here knows scikit-learn; the fine-tuning estimators build on it.
"""

from ._loop import TrainingResult, TrainingSettings, train_pairs
from ._losses import LOSSES, check_targets, pair_loss
from ._pairs import label_pairs

__all__ = [
    "LOSSES",
    "TrainingResult",
    "TrainingSettings",
    "check_targets",
    "label_pairs",
    "pair_loss",
    "train_pairs",
]
