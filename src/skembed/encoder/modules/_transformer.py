"""The Transformer input module: a Hugging Face encoder and its fast tokenizer."""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._config import field, read_json, size_field, write_json
from ._base import Features, LoadContext, Module, register_module
from ._int8 import calibrate_packed
from ._packed import PackedBert, varlen_attention_runs_on

__all__ = ["Transformer", "check_model_config"]


@register_module
class Transformer(Module):
    """Token embeddings from a Hugging Face encoder (``auto_model``).

    On the CPU a BERT encoder in inference runs unpadded (:class:`PackedBert`:
    real tokens only, fused oneDNN products); with gradients enabled or in
    training mode the model's own forward pass runs, so the module trains as
    any ``torch.nn.Module``. With ``int8`` the unpadded pass runs its linear
    layers as int8 products (:mod:`._int8`), calibrated here on fixed texts; the
    model keeps its float32 weights (for the layer norms, saving and training).

    Parameters
    ----------
    auto_model : torch.nn.Module
        The transformers model, on its device and in its dtype.
    tokenizer : transformers.PreTrainedTokenizerFast
    folder : Path
        The folder it was read from.
    max_seq_length : int, optional
        ``sentence_bert_config.json``'s token limit; ``None`` when absent.
    do_lower_case : bool, default=False
    trust_remote_code : bool, default=False
    int8 : bool, default=False
        Run inference with int8 products; needs a float32 BERT encoder on the CPU.
    """

    type_name = "Transformer"
    takes = "text"
    gives = "tokens"

    def __init__(
        self,
        auto_model: torch.nn.Module,
        tokenizer: Any,
        folder: Path,
        max_seq_length: int | None = None,
        do_lower_case: bool = False,
        trust_remote_code: bool = False,
        int8: bool = False,
    ) -> None:
        super().__init__()
        self.auto_model = auto_model
        self.tokenizer = tokenizer
        self.folder = folder
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.trust_remote_code = trust_remote_code
        accepted = inspect.signature(auto_model.forward).parameters
        # T5-style encoders take no token types even when the tokenizer makes them.
        self.token_types = (
            "token_type_ids" in tokenizer.model_input_names and "token_type_ids" in accepted
        )
        self.packed = _unpadded_pass(auto_model)
        if int8:
            self.packed = calibrate_packed(
                self.packed,
                tokenizer,
                token_types=self.token_types,
                lower=do_lower_case,
                source=folder,
            )
        self.add_special_tokens = True
        self._backends: dict[int | None, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Transformer:
        from transformers import AutoTokenizer

        path = folder / "sentence_bert_config.json"
        config = read_json(path) if path.is_file() else {}
        max_seq_length = size_field(config, path, "max_seq_length", None)
        do_lower_case = field(config, path, "do_lower_case", (bool,), False)
        check_model_config(folder)
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=context.trust_remote_code
        )
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"The tokenizer of {folder} has no fast (Rust) implementation; skembed needs one."
            )
        int8 = context.dtype == torch.int8
        # An int8 transformer keeps float32 weights beside its int8 products.
        dtype = torch.float32 if int8 else context.dtype
        model = _load_model(folder, context.trust_remote_code, context.device, dtype)
        return cls(
            model,
            tokenizer,
            folder,
            max_seq_length,
            do_lower_case,
            context.trust_remote_code,
            int8=int8,
        )

    def save(self, folder: Path) -> None:
        with _quiet_transformers():
            self._float32_model().save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        config: dict[str, Any] = {"do_lower_case": self.do_lower_case}
        if self.max_seq_length is not None:
            config = {"max_seq_length": self.max_seq_length, **config}
        write_json(folder / "sentence_bert_config.json", config)

    def _float32_model(self) -> torch.nn.Module:
        # A half-precision copy would save rounded weights: save the float32 original.
        if next(self.auto_model.parameters()).dtype == torch.float32:
            return self.auto_model
        return _load_model(self.folder, self.trust_remote_code, torch.device("cpu"), torch.float32)

    def with_max_seq_length(self, limit: int | None) -> Transformer:
        """A copy (sharing the weights) that saves ``limit`` (its own default when ``None``)."""
        saved = copy.copy(self)
        saved.max_seq_length = limit or self.default_max_seq_length
        return saved

    @property
    def output_dimension(self) -> int:
        return int(self.auto_model.config.hidden_size)

    @property
    def num_hidden_layers(self) -> int | None:
        """Layers of the encoder (what a WeightedLayerPooling after it weighs)."""
        return getattr(self.auto_model.config, "num_hidden_layers", None)

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the transformer's position table allows, if it has one."""
        value = getattr(self.auto_model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def default_max_seq_length(self) -> int:
        """``max_seq_length`` of the folder, else the tokenizer's limit capped by the model's."""
        if self.max_seq_length is not None:
            return int(self.max_seq_length)
        limit = int(self.tokenizer.model_max_length)
        cap = self.max_position_embeddings
        return min(limit, cap) if cap is not None else limit

    @property
    def unpadded(self) -> bool:
        """Whether inference runs the unpadded pass (batches are then planned by real tokens)."""
        return self.packed is not None

    def backend(self, max_length: int | None) -> Any:
        """The Rust tokenizer that cuts at ``max_length`` tokens (one configured copy each).

        ``None``: one that cuts nothing.
        """
        with self._lock:
            if max_length not in self._backends:
                from tokenizers.normalizers import Lowercase, Sequence

                backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
                backend.no_padding()
                if max_length is None:
                    backend.no_truncation()
                else:
                    backend.enable_truncation(
                        max_length,
                        strategy="longest_first",
                        direction=self.tokenizer.truncation_side,
                    )
                if self.do_lower_case:
                    normalizer = backend.normalizer
                    backend.normalizer = Sequence(
                        [Lowercase()] if normalizer is None else [Lowercase(), normalizer]
                    )
                self._backends[max_length] = backend
            return self._backends[max_length]

    def forward(self, features: Features) -> Features:
        mask = features["attention_mask"]
        types = features.get("token_type_ids") if self.token_types else None
        if self.packed is not None and not self.training and not torch.is_grad_enabled():
            # The fused products are inference-only: with gradients the model's own pass runs.
            features["token_embeddings"] = self.packed(
                features["input_ids"], mask, types, features.get("token_count")
            )
            return features
        inputs = {"input_ids": features["input_ids"], "attention_mask": mask}
        if types is not None:
            inputs["token_type_ids"] = types
        output = self.auto_model(**inputs, return_dict=True)
        features["token_embeddings"] = output.last_hidden_state
        # Hidden layers come back only when the model's config asks for them; the reference's
        # WeightedLayerPooling passes token embeddings through unchanged otherwise.
        if self.auto_model.config.output_hidden_states:
            features["all_layer_embeddings"] = output.hidden_states
        return features

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"], state["_backends"] = None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _unpadded_pass(model: torch.nn.Module) -> PackedBert | None:
    """The unpadded pass for ``model`` where it runs, else None (the model's own pass).

    On the CPU, attention per run of equal-length texts (benchmarks/encode_cpu.py). On
    CUDA in float16 or bfloat16, one variable-length attention call per layer, where the
    device's kernels take it; float32 there keeps the model's padded pass, which matches
    the reference to 1e-7.
    """
    if not PackedBert.supports(model):
        return None
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    if device.type == "cpu":
        return PackedBert(model)
    if (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and varlen_attention_runs_on(
            device, dtype, model.config.hidden_size // model.config.num_attention_heads
        )
    ):
        return PackedBert(model, varlen=True)
    return None


# Encoder-decoder configs whose encoder runs alone, by model type: the class that loads it.
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "longt5": "LongT5EncoderModel",
}


def _model_class(config: Any, source: Path) -> type:
    """The transformers class that runs the encoder of ``config``."""
    import transformers

    # Keyed by model type, not by is_encoder_decoder: a saved encoder alone clears that flag.
    name = _ENCODER_CLASSES.get(config.model_type)
    if name is not None:
        return getattr(transformers, name)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{source / 'config.json'}: model_type {config.model_type!r} is an encoder-decoder "
            f"model; skembed runs the encoder of {sorted(_ENCODER_CLASSES)} only."
        )
    return transformers.AutoModel


def _load_model(
    source: Path, trust_remote_code: bool, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    # Sizes the file leaves out are built at the class's defaults: check those too.
    check_model_config(source, config.to_dict())
    model_class = _model_class(config, source)
    # Loaded in float32, then cast: the weights on disk may be in any precision.
    with _quiet_transformers():
        model, loading = model_class.from_pretrained(
            source,
            config=config,
            trust_remote_code=trust_remote_code,
            dtype=torch.float32,
            use_safetensors=(source / "model.safetensors").is_file() or None,
            output_loading_info=True,
        )
    _check_complete(model, loading, source)
    return model.to(device=device, dtype=dtype).eval()


def _check_complete(model: torch.nn.Module, loading: dict[str, Any], source: Path) -> None:
    """Refuse a transformer whose weights files leave parameters to random initialisation.

    Such a model gives different vectors in every process under one fingerprint. Weights
    the model does not use (the heads of a pretraining checkpoint) are ignored, as the
    reference does; so is a missing pooler, whose output no embedding reads.
    """
    pooler = getattr(model, "pooler", None)
    unread = {f"pooler.{name}" for name, _ in pooler.named_parameters()} if pooler else set()
    missing = sorted(set(loading.get("missing_keys", ())) - unread)
    mismatched = sorted(str(key) for key in loading.get("mismatched_keys", ()))
    if missing or mismatched:
        shown = missing[:8] + mismatched[:8]
        raise ValueError(
            f"The weights in {source} do not cover the model its config.json describes "
            f"(model_type {model.config.model_type!r}): {len(missing)} parameters missing, "
            f"{len(mismatched)} of another shape ({', '.join(shown)}"
            f"{', ...' if len(missing) + len(mismatched) > len(shown) else ''}); they would "
            "be initialised at random. Fix config.json or the weights."
        )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" bars: loading a model is not news."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


# Size fields of a Hugging Face config.json, under the names different architectures use.
_LAYERS = ("num_hidden_layers", "num_layers", "n_layer")
_HIDDEN = ("hidden_size", "d_model", "n_embd", "dim")
_INTERMEDIATE = ("intermediate_size", "d_ff", "n_inner", "hidden_dim")
_VOCABULARY = ("vocab_size",)
_POSITIONS = ("max_position_embeddings", "n_positions")
# Weights files hold at least this many bytes per parameter (4-bit quantisation is half a byte).
_MIN_BYTES_PER_PARAMETER = 0.5
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def check_model_config(folder: Path, built: Mapping[str, Any] | None = None) -> None:
    """Refuse a transformer config whose sizes the weights on disk cannot back.

    Every size field of ``config.json`` must be an integer from 1 to
    :data:`MAX_CONFIG_SIZE`, and the parameter count the config implies
    (layers, hidden and intermediate sizes, vocabulary and positions) must fit
    in the weight files: a config that declares a million layers is refused
    here instead of hanging while the model is built.

    Parameters
    ----------
    folder : Path
        The transformer's folder (holding ``config.json`` and the weights).
    built : mapping, default=None
        The configuration transformers builds from the file, its class's
        defaults filled in (``PretrainedConfig.to_dict()``). A size the file
        leaves out is read there: left out, ``hidden_size`` is not 0 but
        the class's default. ``None``: the file alone is checked, before
        transformers reads it.

    Raises
    ------
    ValueError
        Naming the file and the field.
    """
    path = folder / "config.json"
    if not path.is_file():
        return
    config = read_json(path)
    sizes: dict[str, int] = {}
    defaults: list[str] = []
    for names in (_LAYERS, _HIDDEN, _INTERMEDIATE, _VOCABULARY, _POSITIONS):
        present = [name for name in names if config.get(name) is not None]
        for name in present:
            size_field(config, path, name)
        if present:
            sizes[present[0]] = config[present[0]]
            continue
        filled = [n for n in names if isinstance((built or {}).get(n), int)]
        sizes[filled[0] if filled else names[0]] = built[filled[0]] if filled else 0
        defaults += filled[:1]
    layers, hidden, intermediate, vocabulary, positions = sizes.values()
    parameters = (
        layers * (4 * hidden * hidden + 2 * hidden * intermediate)
        + (vocabulary + positions) * hidden
    )
    weight_bytes = sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()
    )
    if weight_bytes and parameters * _MIN_BYTES_PER_PARAMETER > weight_bytes:
        filled_note = (
            f" ({', '.join(defaults)}: not in the file, transformers' default)" if defaults else ""
        )
        raise ValueError(
            f"{path}: the sizes {sizes}{filled_note} describe about {parameters:,} parameters, "
            f"but the weight files in {folder} hold only {weight_bytes:,} bytes; the config "
            "does not match its weights."
        )
