"""The encoder: a loaded model folder that turns a list of texts into embeddings."""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ._folder import DenseSpec, FolderSpec, PoolingSpec, read_folder, write_folder_configs
from ._pooling import pool

__all__ = ["EncodeResult", "Encoder", "folder_fingerprint", "load_encoder"]


@dataclass(frozen=True)
class EncodeResult:
    """Embeddings of a list of texts, in input order, and which texts were truncated."""

    embeddings: np.ndarray
    truncated: np.ndarray

    @property
    def n_truncated(self) -> int:
        """How many texts were longer than the token limit."""
        return int(self.truncated.sum())


class _Dense(torch.nn.Module):
    def __init__(self, spec: DenseSpec, trust_remote_code: bool) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.residual = (
            torch.nn.Linear(spec.in_features, spec.out_features, bias=False)
            if spec.use_residual and spec.in_features != spec.out_features
            else None
        )
        self.use_residual = spec.use_residual
        self.activation = _activation(spec.activation, trust_remote_code)
        self.load_state_dict(_load_weights(spec.path), strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out


def _activation(dotted: str, trust_remote_code: bool) -> torch.nn.Module:
    if not (dotted.startswith("torch.") or trust_remote_code):
        raise ValueError(
            f"Dense activation {dotted!r} is not a torch class; loading it runs code from the "
            "model folder, so pass trust_remote_code=True if you trust it."
        )
    module_name, _, class_name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"Dense activation {dotted!r} is not a torch.nn.Module class.")
    return cls()


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        return load_file(safetensors_path)
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        # weights_only refuses pickled code: a .bin file cannot run anything on load.
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise OSError(f"No model.safetensors or pytorch_model.bin in {folder}.")


_FINGERPRINTS: dict[tuple, str] = {}


def folder_fingerprint(folder: Path) -> str:
    """Return a SHA-256 over the names and contents of the files of a model folder.

    Hashes are remembered per (path, size, modification time) of the files, so
    a process hashes a folder once.
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    stats = tuple(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    key = (str(folder), stats)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path, (name, _, _) in zip(files, stats, strict=True):
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


class Encoder:
    """A model folder loaded on one device, ready to encode texts.

    Parameters
    ----------
    folder : Path
        A resolved local model folder (see ``resolve_model_folder``).
    device : torch.device
        Where the model runs.
    trust_remote_code : bool, default=False
        Allow custom model code from the folder to run.
    """

    def __init__(self, folder: Path, device: torch.device, trust_remote_code: bool = False) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.spec: FolderSpec = read_folder(folder)
        self.fingerprint = folder_fingerprint(folder)
        self.device = device
        source = self.spec.transformer_path
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(
                f"The tokenizer of {source} has no fast (Rust) implementation; skembed needs one."
            )
        self.model = AutoModel.from_pretrained(
            source,
            trust_remote_code=trust_remote_code,
            dtype=torch.float32,
            use_safetensors=(source / "model.safetensors").is_file() or None,
        ).to(device)
        self.model.eval()
        self._dense = {
            position: _Dense(step, trust_remote_code).to(device)
            for position, step in enumerate(self.spec.steps)
            if isinstance(step, DenseSpec)
        }
        self._backends: dict[int, object] = {}
        self._lock = threading.Lock()
        self.hidden_size = int(self.model.config.hidden_size)
        self.embedding_dimension = self._output_dimension()

    def _output_dimension(self) -> int:
        dim = self.hidden_size
        for step in self.spec.steps:
            if isinstance(step, PoolingSpec):
                dim = dim * len(step.modes)
            elif isinstance(step, DenseSpec):
                dim = step.out_features
        return dim

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the transformer's position table allows, if it has one."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def default_max_seq_length(self) -> int:
        """``max_seq_length`` of the folder, else the tokenizer's limit capped by the model's."""
        if self.spec.max_seq_length is not None:
            return int(self.spec.max_seq_length)
        limit = int(self.tokenizer.model_max_length)
        cap = self.max_position_embeddings
        return min(limit, cap) if cap is not None else limit

    def _backend(self, max_length: int):
        # One configured copy of the Rust tokenizer per length limit; the shared
        # Hugging Face tokenizer object is never mutated.
        with self._lock:
            if max_length not in self._backends:
                from tokenizers.normalizers import Lowercase, Sequence

                backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
                backend.no_padding()
                backend.enable_truncation(
                    max_length, strategy="longest_first", direction=self.tokenizer.truncation_side
                )
                if self.spec.do_lower_case:
                    normalizer = backend.normalizer
                    backend.normalizer = Sequence(
                        [Lowercase()] if normalizer is None else [Lowercase(), normalizer]
                    )
                self._backends[max_length] = backend
            return self._backends[max_length]

    def prompt_length(self, prompt: str, max_length: int) -> int:
        """Number of tokens a prompt adds, not counting a trailing special token."""
        ids = self._backend(max_length).encode(prompt).ids
        special = set(self.tokenizer.all_special_ids)
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 32,
        max_seq_length: int | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> EncodeResult:
        """Encode texts into float32 embeddings, returned in input order.

        Texts are tokenized in one call of the Rust tokenizer, sorted by token
        length so batches carry little padding, and run under
        ``torch.inference_mode``.

        Parameters
        ----------
        texts : list of str
        batch_size : int, default=32
        max_seq_length : int, optional
            Token limit; default is the model's.
        prompt : str, optional
            Text prepended to every input.
        normalize_embeddings : bool, default=False
            L2-normalise the output rows.
        show_progress_bar : bool, default=False
            Show a tqdm bar over batches on stderr.

        Returns
        -------
        EncodeResult
        """
        max_length = max_seq_length or self.default_max_seq_length
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        if not texts:
            return EncodeResult(out, np.zeros(0, dtype=bool))
        backend = self._backend(max_length)
        inputs = [prompt + text for text in texts] if prompt else texts
        encodings = backend.encode_batch(inputs)
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool)
        prompt_length = (
            self.prompt_length(prompt, max_length)
            if prompt and not self.spec.pooling.include_prompt
            else 0
        )
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        starts = range(0, len(order), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="Batches", disable=not show_progress_bar):
                rows = order[start : start + batch_size]
                batch = self._pad([encodings[i] for i in rows], int(lengths[rows].max()))
                embeddings = self._forward(batch, prompt_length)
                if normalize_embeddings:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
                out[rows] = embeddings.float().cpu().numpy()
        return EncodeResult(out, truncated)

    def _pad(self, encodings: list, width: int) -> dict[str, np.ndarray]:
        names = self.tokenizer.model_input_names
        ids = np.full((len(encodings), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            span = slice(width - n, width) if left else slice(0, n)
            ids[row, span] = encoding.ids
            mask[row, span] = 1
            types[row, span] = encoding.type_ids
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            batch["token_type_ids"] = types
        return batch

    def _forward(self, batch: dict[str, np.ndarray], prompt_length: int) -> torch.Tensor:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        token_embeddings = self.model(**tensors, return_dict=True).last_hidden_state
        embeddings = token_embeddings
        for position, step in enumerate(self.spec.steps):
            if isinstance(step, PoolingSpec):
                embeddings = pool(embeddings, tensors["attention_mask"], step.modes, prompt_length)
            elif isinstance(step, DenseSpec):
                embeddings = self._dense[position](embeddings)
            else:
                embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
        return embeddings

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        max_seq_length: int,
        similarity_fn_name: str,
        normalize: bool = False,
        prompt: str | None = None,
    ) -> None:
        """Write the model as a sentence-transformers model folder.

        Parameters
        ----------
        path : str or path-like
            Target folder, created if needed.
        max_seq_length : int
            Written to ``sentence_bert_config.json``.
        similarity_fn_name : str
            Written to ``config_sentence_transformers.json``.
        normalize : bool, default=False
            Append a Normalize module unless the model already ends with one.
        prompt : str, optional
            Saved as the default prompt ``"skembed"``.
        """
        import transformers
        from safetensors.torch import save_file

        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        # The folder layout numbers modules by position, so dense folders are renamed on save.
        steps = []
        for position, step in enumerate(self.spec.steps):
            if isinstance(step, DenseSpec):
                folder = target / f"{position + 1}_Dense"
                folder.mkdir(parents=True, exist_ok=True)
                state = self._dense[position].state_dict()
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in state.items()},
                    folder / "model.safetensors",
                )
                step = replace(step, path=folder)
            steps.append(step)
        if normalize and steps[-1] != "normalize":
            steps.append("normalize")
        prompts, default_prompt_name = self.spec.prompts, self.spec.default_prompt_name
        if prompt is not None:
            prompts, default_prompt_name = {**prompts, "skembed": prompt}, "skembed"
        spec = replace(
            self.spec,
            path=target,
            transformer_path=target,
            steps=tuple(steps),
            prompts=prompts,
            default_prompt_name=default_prompt_name,
        )
        write_folder_configs(
            spec,
            target,
            hidden_size=self.hidden_size,
            max_seq_length=max_seq_length,
            similarity_fn_name=similarity_fn_name,
            versions={
                "skembed": _skembed_version(),
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
        )


def _skembed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skembed")
    except PackageNotFoundError:
        return "unknown"


_ENCODERS: dict[tuple[str, str, bool], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(folder: Path, device: torch.device, trust_remote_code: bool = False) -> Encoder:
    """Return the process-wide encoder for (folder, device, trust_remote_code), loading it once.

    Clones of an estimator, and estimators with the same model, share one copy
    of the weights.
    """
    key = (str(folder), str(device), trust_remote_code)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = Encoder(folder, device, trust_remote_code)
        return _ENCODERS[key]
