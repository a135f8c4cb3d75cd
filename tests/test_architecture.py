"""The design the code must keep (issue 12): one-way flow, the plan as the only interpreter of the spec, one job per
module. Read from the source itself, so a change that breaks the design fails here."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unetgen"

#: Spec fields that shape the network: only the spec and the plan may read them.
SHAPING = ("padding", "padding_mode", "upsampling", "interpolation", "block", "norm", "norm_groups", "activation",
           "negative_slope", "dropout", "dropout_at", "kernel_size", "kernel_sizes", "pool_sizes", "kernel(", "pool(",
           "conv_widths", "level_channels", "convs_per_level", "channels", "width", "growth", "max_channels",
           "up_channels", "conv_bias", "uses_conv_bias", "up_bias", "output", "final_activation", "depth",
           "skip_gate", "gate_levels", "gate_reduction", "gates_per_level", "gating_conv", "fused_heads")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for candidate in [target] + [f"{target}.{alias.name}" for alias in node.names]:
                if candidate in modules and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
    return found


def test_no_import_circle_and_nothing_imports_the_package():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert not [name for name, targets in graph.items() if "unetgen" in targets]
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            assert state.get(target) != 1, "import circle: " + " → ".join(trail + [node, target])
            if target not in state:
                visit(target, trail + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_onnx_reader_and_writer_share_only_the_contract():
    modules = _modules()
    reader = _imports("unetgen.export.reader", modules["unetgen.export.reader"], modules)
    writer = _imports("unetgen.export.writer", modules["unetgen.export.writer"], modules)
    assert "unetgen.export.writer" not in reader and "unetgen.export.reader" not in writer
    assert "unetgen.export.contract" in reader and "unetgen.export.contract" in writer


def test_only_the_spec_and_the_plan_read_shaping_fields():
    pattern = re.compile(r"\bspec\.(" + "|".join(re.escape(f) for f in SHAPING) + r")(?![\w])")
    readers = []
    for name, path in _modules().items():
        if name.startswith("unetgen.spec") or name == "unetgen.planning.plan":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                readers.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not readers, "\n".join(readers)


def test_each_module_says_its_one_job():
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and doc.splitlines()[0].strip(), f"{name}: no docstring naming the module's job"


def test_the_spec_and_the_plan_never_import_torch():
    code = (
        "import sys, unetgen\n"
        "from unetgen.planning import cost, field, limits, plan, sizes\n"
        "p = unetgen.make_plan(unetgen.preset('cicek3d')); cost.estimate(p); field.receptive_field(p)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
