"""unetgen: U-Net variants from a declarative spec, every shape worked out before anything is built.

The flow is one-way: YAML → :class:`UNetSpec` → :class:`Plan` (pure integers) → ``nn.Module`` → checkpoint.
torch is imported only when a network is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .draw import draw
from .cost import estimate, memory_limit, receptive_field, set_memory_limit
from .errors import CheckpointError, ExportError, ResourceError, SizeError, SpecError, UNetGenError
from .plan import Block, Plan, check_input_size, default_input_size, make_plan
from .spec import UNetSpec, load_spec, parse_spec, preset, preset_names, spec_from_dict

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import load, save
    from .export import export_onnx
    from .network import UNet, build
    from .optimization import optimize
    from .runtime import onnx_session, read_onnx_info
    from .inference import predict

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
]

_LAZY = {"build": "network", "UNet": "network", "save": "checkpoint", "load": "checkpoint", "export_onnx": "export",
         "onnx_session": "runtime", "read_onnx_info": "runtime"}
_LAZY["predict"] = "inference"  # overlap-tile inference; the module is not named predict, which would shadow it
_LAZY["optimize"] = "optimization"  # not optimize.py: importing it would shadow the function


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
