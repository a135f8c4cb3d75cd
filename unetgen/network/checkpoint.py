"""Checkpoints: the spec and the weights in one file, written atomically and loaded safely (``weights_only``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..version import __version__
from ..errors import CheckpointError, SpecError
from ..files import atomic_write
from .unet import UNet, build
from ..spec.fields import spec_from_dict

FORMAT = "unetgen-checkpoint"
FORMAT_VERSION = 1


def save(model: UNet, path: str | Path) -> Path:
    """Save a built network's spec and weights to one file.

    Args:
        model: a network from :func:`unetgen.build` (or :func:`load`).
        path: the file to write (conventionally ``.pt``); replaced atomically.

    Returns:
        The path written.

    Raises:
        UNetGenError: when the file cannot be written (no such folder, no permission, a full disk); an existing
            file at ``path`` is then left as it was.
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "unetgen_version": __version__,
        "spec": json.dumps(model.spec.model_dump(mode="json")),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }

    def write(handle: BinaryIO) -> None:
        writer = _Writer(handle)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is not None:  # torch reports a full disk as "unexpected pos"; say what happened
                raise writer.error from None
            raise

    return atomic_write(path, write)


class _Writer:
    """A file handle that keeps the ``OSError`` of a failed write, which ``torch.save`` turns into a RuntimeError."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def load(path: str | Path, map_location: str | torch.device = "cpu") -> UNet:
    """Rebuild a network from a checkpoint written by :func:`save` (or ``unetgen build --save``).

    The file is read with ``torch.load(weights_only=True)``, so it cannot run code; its spec is validated again.

    Args:
        path: the checkpoint.
        map_location: where to put the weights.

    Returns:
        The network, with the saved weights, in training mode as after :func:`unetgen.build`.

    Raises:
        CheckpointError: when the file is missing, truncated, not a unetgen checkpoint, or its weights do not match
            its spec.
        SpecError: when the spec inside is not valid.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        payload: Any = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds here: truncated zip, pickle, unsupported global
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({first[:160]}); write one with 'unetgen build SPEC --save FILE'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a unetgen checkpoint; write one with 'unetgen build SPEC --save FILE'")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r}; this unetgen reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        data = json.loads(payload["spec"])
    except (KeyError, TypeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: the checkpoint's spec is missing or not JSON") from None
    spec = spec_from_dict(data, source=f"{path} (spec)")
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint has no state_dict")
    model = build(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{path}: weights do not match the spec: {'; '.join(parts)}")
    for key, tensor in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"{path}: weights do not match the spec: {key} has shape {shape}, the spec needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model.to(map_location)


__all__ = ["save", "load", "SpecError"]
