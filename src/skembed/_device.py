"""The one place that decides which torch device a model runs on."""

from __future__ import annotations

import torch

from ._options import DTYPES
from ._warnings import warn_at_caller

__all__ = [
    "cpu_features",
    "cpu_has_bfloat16_units",
    "resolve_device",
    "resolve_devices",
    "resolve_dtype",
]

_TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return the torch device to run on.

    Parameters
    ----------
    device : str, torch.device or None
        An explicit device always wins. ``None`` picks CUDA when available,
        else Apple MPS, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``device`` is not a valid device string, or names an accelerator
        this machine does not have.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; "
            "expected e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available here.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available here.")
    return resolved


def resolve_devices(device: object) -> list[torch.device]:
    """Return the devices to run on: one, a list, or every CUDA GPU.

    Parameters
    ----------
    device : str, torch.device, list or tuple of them, "all" or None
        ``"all"`` means every visible CUDA GPU. Anything else is resolved by
        :func:`resolve_device`, element by element for a list.

    Returns
    -------
    list of torch.device

    Raises
    ------
    ValueError
        If ``"all"`` finds no CUDA GPU, the list is empty, or a device is invalid.
    """
    if isinstance(device, str) and device == "all":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError("device='all' means every CUDA GPU, but none is visible here.")
        return [torch.device("cuda", index) for index in range(count)]
    if isinstance(device, list | tuple):
        if not device:
            raise ValueError("device is an empty list; name at least one device.")
        return [resolve_device(d) for d in device]
    return [resolve_device(device)]


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Return the precision the transformer runs in.

    Parameters
    ----------
    dtype : {"auto", "float32", "float16", "bfloat16", "int8"}, torch.dtype or None
        ``"auto"`` (or None) means float16 on CUDA and float32 elsewhere.
        ``"int8"`` (``torch.int8``: int8 matrix products) runs on the CPU only.
    device : torch.device
        The device the model runs on.

    Returns
    -------
    torch.dtype

    Raises
    ------
    ValueError
        If ``dtype`` is not one of the supported precisions, or is int8 on a
        device other than the CPU.
    """
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _TORCH_DTYPES.values():
        resolved = dtype
    elif isinstance(dtype, str) and dtype in _TORCH_DTYPES:
        resolved = _TORCH_DTYPES[dtype]
    else:
        raise ValueError(
            f"dtype={dtype!r} is not supported; expected 'auto' or one of {list(DTYPES)}."
        )
    if resolved == torch.int8 and device.type != "cpu":
        raise ValueError(
            f"dtype='int8' runs on the CPU only; device is {device}. Use dtype='float16' or "
            "'bfloat16' there."
        )
    if resolved == torch.bfloat16 and device.type == "cpu" and not cpu_has_bfloat16_units():
        _warn_emulated_bfloat16()
    return resolved


_WARNED_BFLOAT16 = False


def _warn_emulated_bfloat16() -> None:
    global _WARNED_BFLOAT16
    if _WARNED_BFLOAT16:
        return
    _WARNED_BFLOAT16 = True
    warn_at_caller(
        f"dtype='bfloat16' on a CPU without bfloat16 units ({cpu_features()}): torch emulates "
        "bfloat16 there, which runs slower than float32 (benchmarks/encode_cpu.py measures "
        "both). dtype='float32' (or 'auto') is the fastest exact choice on this CPU. This "
        "warning is shown once per process."
    )


# The CPU flags (as /proc/cpuinfo names them) that decide which precision is fast here
# (the VNNI ones: int8 dot products in one instruction).
_FEATURES = (
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_features() -> str:
    """The CPU's model and the flags that matter for speed, for printing next to a figure.

    Returns
    -------
    str
        E.g. ``"AMD EPYC 7B13: avx2"`` or ``"...: avx2 avx512f avx512_bf16 amx_bf16"``;
        ``"unknown"`` parts where ``/proc/cpuinfo`` cannot be read (not Linux).
    """
    import platform

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next(
                (line.partition(":")[2].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        model = platform.processor() or model
    flags = _cpu_flags()
    present = [name for name in _FEATURES if name in flags]
    return f"{model}: {' '.join(present) if present else 'none of ' + ', '.join(_FEATURES)}"


def cpu_has_bfloat16_units() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Without them torch emulates bfloat16 and a bfloat16 model runs slower than float32.

    Returns
    -------
    bool
    """
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags
