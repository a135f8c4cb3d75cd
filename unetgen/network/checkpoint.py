"""Checkpoints: the spec and the weights in one file, written atomically and loaded safely (``weights_only``).

Loading checks the weights against the network in one place (:func:`_load_state`), for checkpoints and for files
of weights alone. A trained network's intensity normalisation (``model.intensity``, see
:mod:`unetgen.training.intensity`) is saved with it and set again on load; ``unetgen train`` adds its own entries
(the state to resume from), which loading ignores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..version import __version__
from ..errors import CheckpointError
from ..files import atomic_write
from ..spec.fields import UNetSpec, load_spec, spec_from_dict
from .unet import UNet, build

FORMAT = "unetgen-checkpoint"
FORMAT_VERSION = 1


def save(model: UNet, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a built network's spec and weights (and its intensity normalisation, if it has one) to one file.

    Args:
        model: a network from :func:`unetgen.build` (or :func:`load`).
        path: the file to write (conventionally ``.pt``); replaced atomically.
        extra: more entries to store (tensors, numbers, strings, lists and dicts of them), e.g. a training state;
            :func:`load` ignores them. They cannot replace the checkpoint's own entries.

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
    intensity = getattr(model, "intensity", None)
    if intensity is not None:
        payload["intensity"] = json.dumps(intensity)
    for key, value in (extra or {}).items():
        if key in payload or key == "intensity":
            raise ValueError(f"extra: {key!r} is one of the checkpoint's own entries")
        payload[key] = value

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
    payload = _read(path, map_location)
    if not _is_checkpoint(payload):
        raise CheckpointError(f"{path}: not a unetgen checkpoint; write one with 'unetgen build SPEC --save FILE'")
    return _from_checkpoint(payload, path).to(map_location)


def load_weights(path: str | Path, spec: UNetSpec | str | None = None) -> UNet:
    """A network from a file of weights: a unetgen checkpoint (which holds its spec), or weights alone
    (``torch.save(model.state_dict(), path)``), built from ``spec``. Read safely, onto the CPU.

    Args:
        path: the file.
        spec: the spec (a spec, preset name or YAML path) that weights alone belong to; not used for a checkpoint
            (compare it with the network's ``spec`` to check that both describe one network).

    Returns:
        The network with the file's weights, in training mode as after :func:`unetgen.build`.

    Raises:
        CheckpointError: when the file is missing or unreadable, holds neither a checkpoint nor a state dict, holds
            weights alone and no ``spec`` is given, or the weights do not match the spec.
        SpecError: when a spec (given, or in the checkpoint) is not valid.
    """
    path = Path(path)
    payload = _read(path, "cpu")
    if _is_checkpoint(payload):
        return _from_checkpoint(payload, path)
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: neither a unetgen checkpoint nor a state dict (a mapping of names to tensors)")
    if spec is None:
        raise CheckpointError(f"{path}: holds weights without a spec; give the spec they belong to (SPEC, or spec=...)")
    model = build(load_spec(spec))
    _load_state(model, payload, path)
    return model


def _read(path: Path, map_location: str | torch.device) -> Any:
    """The file's contents by ``torch.load(weights_only=True)``; a missing or unreadable file is a user error."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds here: truncated zip, pickle, unsupported global
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({first[:160]}); write one with 'unetgen build SPEC --save FILE'"
        ) from None


def _is_checkpoint(payload: Any) -> bool:
    """Whether a file's contents are a unetgen checkpoint (of any format version)."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def _from_checkpoint(payload: dict[str, Any], path: Path) -> UNet:
    """The network a checkpoint's contents describe, with its weights."""
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
    _load_state(model, state, path)
    if "intensity" in payload:
        try:
            model.intensity = json.loads(payload["intensity"])
        except (TypeError, ValueError, RecursionError):
            raise CheckpointError(f"{path}: the checkpoint's intensity entry is not JSON") from None
    return model


def _load_state(model: UNet, state: dict[Any, Any], where: Path) -> None:
    """Load ``state`` into ``model`` once it has exactly the model's keys, each a tensor of the model's shape: the
    one check of weights against a network, for checkpoints and for weights alone."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = sorted(str(key) for key in state if key not in expected)
    wrong = [key for key in expected if key in state and not _fits(state[key], expected[key])]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        for key in wrong[:3]:
            value = state[key]
            if isinstance(value, torch.Tensor):
                parts.append(f"{key} has shape {tuple(value.shape)}, the spec needs {tuple(expected[key].shape)}")
            else:
                parts.append(f"{key} is a {type(value).__name__}, not a tensor")
        raise CheckpointError(f"{where}: weights do not match the spec '{model.spec.name}': {'; '.join(parts)}")
    model.load_state_dict(state)


def _fits(value: Any, tensor: torch.Tensor) -> bool:
    """Whether ``value`` can stand for ``tensor`` in a state dict: a tensor of its shape."""
    return isinstance(value, torch.Tensor) and value.shape == tensor.shape


__all__ = ["save", "load", "load_weights"]
