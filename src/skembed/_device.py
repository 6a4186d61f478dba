"""The one place that decides which torch device a model runs on."""

from __future__ import annotations

import torch

from ._options import DTYPES

__all__ = ["resolve_device", "resolve_devices", "resolve_dtype"]

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
    dtype : {"auto", "float32", "float16", "bfloat16"}, torch.dtype or None
        ``"auto"`` (or None) means float16 on CUDA and float32 elsewhere.
    device : torch.device
        The device the model runs on.

    Returns
    -------
    torch.dtype

    Raises
    ------
    ValueError
        If ``dtype`` is not one of the supported precisions.
    """
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _TORCH_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _TORCH_DTYPES:
        return _TORCH_DTYPES[dtype]
    raise ValueError(f"dtype={dtype!r} is not supported; expected 'auto' or one of {list(DTYPES)}.")
