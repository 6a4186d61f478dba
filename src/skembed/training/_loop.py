"""The training loop: AdamW, a linear warmup-and-decay schedule, clipped gradients.

It follows the reference trainer step for step (its default optimizer, schedule,
weight-decay exemptions, gradient clipping and shuffling), so that the same
data, loss, settings and seed give the same losses and weights.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..encoder import Encoder, EncodeSettings
from ._losses import pair_loss

__all__ = ["TrainingResult", "TrainingSettings", "decay_parameter_names", "train_pairs"]

# Parameters of these kinds, or named like them, get no weight decay (as in the reference).
_NO_DECAY = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)")]
_NO_DECAY.append(re.compile(r"_norm(?:$|\.)"))


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: the estimators' hyperparameters, checked."""

    loss: str
    epochs: int
    learning_rate: float
    batch_size: int
    warmup: float
    weight_decay: float
    max_steps: int | None
    seed: int
    logging_steps: int
    validation_fraction: float | None
    n_iter_no_change: int | None
    mixed_precision: str
    max_grad_norm: float = 1.0


@dataclass
class TrainingResult:
    """What a training run did."""

    history: list[dict[str, float]]
    n_steps: int
    best_step: int | None


@dataclass(frozen=True)
class _Pairs:
    first: list[str]
    second: list[str]
    targets: np.ndarray

    def take(self, rows: np.ndarray) -> _Pairs:
        return _Pairs(
            [self.first[i] for i in rows], [self.second[i] for i in rows], self.targets[rows]
        )


def decay_parameter_names(module: torch.nn.Module) -> set[str]:
    """Names of the parameters that get weight decay: neither in a LayerNorm nor a bias/norm."""
    exempt = {
        f"{prefix}.{name}" if prefix else name
        for prefix, child in module.named_modules()
        if isinstance(child, torch.nn.LayerNorm)
        for name, _ in child.named_parameters()
    }
    return {
        name
        for name, _ in module.named_parameters()
        if name not in exempt and not any(p.search(name.lower()) for p in _NO_DECAY)
    }


def _optimizer(module: torch.nn.Module, settings: TrainingSettings) -> torch.optim.AdamW:
    decay = decay_parameter_names(module)
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if n in decay], "weight_decay": settings.weight_decay},
        {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
    ]
    device = next(module.parameters()).device
    # The reference's default optimizer is the fused AdamW where torch has one for the device.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        groups, lr=settings.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused
    )


def warmup_steps(warmup: float, total: int) -> int:
    """A ratio of the steps below 1, else a number of steps (the reference's rule)."""
    return int(warmup) if warmup >= 1 else math.ceil(total * warmup)


def _schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mixed_precision == "no":
        return None
    if mixed_precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float16


class _Trainer:
    def __init__(
        self, encoder: Encoder, settings: TrainingSettings, encode_settings: EncodeSettings
    ) -> None:
        self.encoder = encoder
        self.pipeline = encoder.pipeline
        self.settings = settings
        self.encode_settings = encode_settings
        self.device = encoder.device
        self.amp = _autocast_dtype(settings.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def loss(self, batch: _Pairs) -> torch.Tensor:
        first = self.encoder.tokenize(batch.first, self.encode_settings)
        second = self.encoder.tokenize(batch.second, self.encode_settings)
        targets = torch.as_tensor(batch.targets, dtype=torch.float32, device=self.device)
        with self._autocast():
            a = self.pipeline(first)["sentence_embedding"]
            b = self.pipeline(second)["sentence_embedding"]
            return pair_loss(self.settings.loss, a, b, targets)

    def validation_loss(self, pairs: _Pairs) -> float:
        self.pipeline.eval()
        try:
            with torch.no_grad():
                size = self.settings.batch_size
                losses = [
                    (self.loss(pairs.take(np.arange(i, min(i + size, len(pairs.first))))), n)
                    for i in range(0, len(pairs.first), size)
                    for n in [min(size, len(pairs.first) - i)]
                ]
        finally:
            self.pipeline.train()
        return float(sum(loss.item() * n for loss, n in losses) / len(pairs.first))


def _batches(n: int, size: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of every batch, endlessly: a new random order each epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        # Drawn as the reference's data loader draws it: one int64 from the global generator
        # when an epoch's iteration starts (its workers' base seed), then the permutation.
        torch.empty((), dtype=torch.int64).random_()
        order = torch.randperm(n, generator=generator).numpy()
        for start in range(0, n, size):
            yield order[start : start + size]


def _kept(encoder: Encoder, settings: TrainingSettings) -> dict[str, torch.Tensor]:
    """A copy of the weights, kept only when early stopping may go back to them."""
    if settings.n_iter_no_change is None:
        return {}
    return {k: v.detach().clone() for k, v in encoder.pipeline.state_dict().items()}


def _split(pairs: _Pairs, fraction: float | None, seed: int) -> tuple[_Pairs, _Pairs | None]:
    if not fraction:
        return pairs, None
    n = len(pairs.first)
    n_validation = math.ceil(n * fraction)
    if n_validation >= n:
        raise ValueError(
            f"validation_fraction={fraction} leaves no training pairs out of {n}; use a "
            "smaller fraction or more data."
        )
    order = np.random.default_rng(seed).permutation(n)
    return pairs.take(np.sort(order[n_validation:])), pairs.take(np.sort(order[:n_validation]))


def train_pairs(
    encoder: Encoder,
    first: list[str],
    second: list[str],
    targets: np.ndarray,
    settings: TrainingSettings,
    encode_settings: EncodeSettings,
    show_progress_bar: bool | None = None,
) -> TrainingResult:
    """Train ``encoder.pipeline`` in place on text pairs and their targets.

    Parameters
    ----------
    encoder : Encoder
        A float32 encoder of its own (not shared: its weights change).
    first, second : list of str
        The pairs' texts.
    targets : ndarray of shape (n,)
        One target per pair, as the loss takes them.
    settings : TrainingSettings
    encode_settings : EncodeSettings
        Token limit, prompt and task the texts are tokenized with.
    show_progress_bar : bool, optional
        ``None`` shows a bar over the steps when stderr is a terminal.

    Returns
    -------
    TrainingResult
        The loss per logging step (and validation loss, when a fraction of
        the pairs is held out), the steps run, and the step whose weights were
        kept (the best validation loss) when early stopping was asked for.
    """
    train, validation = _split(
        _Pairs(first, second, targets), settings.validation_fraction, settings.seed
    )
    n = len(train.first)
    per_epoch = math.ceil(n / settings.batch_size)
    total = settings.max_steps or settings.epochs * per_epoch
    optimizer = _optimizer(encoder.pipeline, settings)
    schedule = _schedule(optimizer, warmup_steps(settings.warmup, total), total)
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty()
    from tqdm.auto import tqdm

    devices = [encoder.device] if encoder.device.type == "cuda" else []
    trainer = _Trainer(encoder, settings, encode_settings)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    stale = 0
    window: list[float] = []
    params = [p for p in encoder.pipeline.parameters() if p.requires_grad]
    with (
        torch.random.fork_rng(devices=devices),
        tqdm(total=total, disable=not show_progress_bar, unit="step", desc="Fine-tuning") as bar,
    ):
        torch.manual_seed(settings.seed)
        encoder.pipeline.train()
        try:
            batches = _batches(n, settings.batch_size, settings.seed)
            for step in range(1, total + 1):
                rows = next(batches)
                learning_rate = schedule.get_last_lr()[0]
                loss = trainer.loss(train.take(rows))
                scaled = loss if trainer.scaler is None else trainer.scaler.scale(loss)
                scaled.backward()
                if trainer.scaler is not None:
                    trainer.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                if trainer.scaler is None:
                    optimizer.step()
                else:
                    trainer.scaler.step(optimizer)
                    trainer.scaler.update()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                window.append(loss.item())
                bar.update(1)
                if step % settings.logging_steps and step != total:
                    continue
                entry = {
                    "step": step,
                    "epoch": step / per_epoch,
                    "loss": float(np.mean(window)),
                    "learning_rate": learning_rate,
                }
                window = []
                if validation is not None:
                    entry["validation_loss"] = trainer.validation_loss(validation)
                    if best is None or entry["validation_loss"] < best[0]:
                        best, stale = (entry["validation_loss"], step, _kept(encoder, settings)), 0
                    else:
                        stale += 1
                history.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                if settings.n_iter_no_change is not None and stale >= settings.n_iter_no_change:
                    break
        finally:
            encoder.pipeline.eval()
    if best is not None and best[2]:
        encoder.pipeline.load_state_dict(best[2])
        return TrainingResult(history, step, best[1])
    return TrainingResult(history, step, None)
