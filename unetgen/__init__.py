"""unetgen: U-Net variants from a declarative spec, every shape worked out before anything is built.

The flow is one-way: YAML → :class:`UNetSpec` → :class:`Plan` (pure integers) → ``nn.Module`` → checkpoint.
torch is imported only when a network is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

from .drawing.draw import draw
from .planning.cost import estimate
from .planning.field import receptive_field
from .planning.limits import memory_limit, set_memory_limit
from .errors import CheckpointError, ExportError, ResourceError, SizeError, SpecError, UNetGenError
from .planning.plan import Block, Plan, check_input_size, default_input_size, make_plan
from .spec.fields import UNetSpec, load_spec, parse_spec, preset, preset_names, spec_from_dict

if TYPE_CHECKING:  # pragma: no cover
    from .network.checkpoint import load, save
    from .export.writer import export_onnx
    from .network.unet import UNet, build
    from .network.optimization import optimize
    from .export.reader import onnx_session, read_onnx_info
    from .inference.predict import predict
    from .training.config import TrainConfig
    from .training.loop import train

__all__ = [
    "__version__",
    "UNetGenError",
    "SpecError",
    "SizeError",
    "CheckpointError",
    "ResourceError",
    "estimate",
    "receptive_field",
    "memory_limit",
    "set_memory_limit",
    "UNetSpec",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "preset",
    "preset_names",
    "Plan",
    "Block",
    "make_plan",
    "plan",
    "check_input_size",
    "default_input_size",
    "draw",
    "build",
    "UNet",
    "optimize",
    "save",
    "load",
    "export_onnx",
    "onnx_session",
    "read_onnx_info",
    "ExportError",
    "predict",
    "train",
    "TrainConfig",
]

#: Names that need torch (or onnx), and the module each lives in: imported on first use.
_LAZY = {
    "build": "network.unet",
    "UNet": "network.unet",
    "save": "network.checkpoint",
    "load": "network.checkpoint",
    "optimize": "network.optimization",
    "export_onnx": "export.writer",
    "onnx_session": "export.reader",
    "read_onnx_info": "export.reader",
    "predict": "inference.predict",
    "train": "training.loop",
    "TrainConfig": "training.config",
}


def plan(spec: UNetSpec | str, input_size: tuple[int, ...] | list[int] | None = None) -> Plan:
    """Plan a spec (or a preset name / YAML path) at an input size. See :func:`unetgen.plan.make_plan`."""
    return make_plan(load_spec(spec), input_size)


def __getattr__(name: str) -> Any:
    # torch is imported only when something that needs it is asked for.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'unetgen' has no attribute {name!r}")
