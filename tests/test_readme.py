"""The README stays true: its example output is what the tool prints, and its spec table lists every field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import unetgen
from unetgen.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _block_after(command: str) -> str:
    start = README.index(f"$ {command}\n") + len(command) + 3
    return README[start : README.index("```", start)]


def test_build_example_is_real(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    main(["build", "presets/paper.yaml"])
    assert _block_after("unetgen build presets/paper.yaml") == capsys.readouterr().out


def test_size_error_example_is_real(capsys):
    main(["build", "paper", "--input-size", "571", "572"])
    assert _block_after("unetgen build paper --input-size 571 572") == capsys.readouterr().err


def test_spec_table_lists_every_field():
    documented = set(re.findall(r"^\| `(\w+)` \|", README, flags=re.M)) - set(unetgen.preset_names())
    assert documented == set(unetgen.UNetSpec.model_fields)


@pytest.mark.parametrize("section", ["## From Python", "## Speed"])
def test_python_example_runs(section, tmp_path, monkeypatch, capsys):
    """The first Python block of the section runs, and prints what its comments say."""
    monkeypatch.chdir(tmp_path)
    start = README.index("```python\n", README.index(f"\n{section}\n")) + len("```python\n")
    code = README[start : README.index("```", start)]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    claimed = [line.split("# ")[-1] for line in code.splitlines() if "print(" in line]
    assert printed == claimed


def test_preset_table_is_real():
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| ([\d,]+)", README, flags=re.M)
    presets = {name: (shapes.strip(), params) for name, shapes, params in rows if name in unetgen.preset_names()}
    assert set(presets) == set(unetgen.preset_names())
    for name, (shapes, params) in presets.items():
        plan = unetgen.plan(name)
        shown = "×".join(map(str, plan.input_shape)) + " → " + "×".join(map(str, plan.output_shape))
        assert shapes == shown
        assert int(params.replace(",", "")) in (plan.parameters, plan.parameters - plan.norm_parameters)


def test_sizes_examples_are_real(capsys):
    main(["sizes", "paper"])
    assert _block_after("unetgen sizes paper").startswith(capsys.readouterr().out)
    main(["sizes", "paper", "--output-size", "388"])
    assert capsys.readouterr().out.endswith(_block_after("unetgen sizes paper --output-size 388"))  # its last line


def test_bad_input_example_is_real(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = README.index("`bad.yaml`:\n\n```yaml\n") + len("`bad.yaml`:\n\n```yaml\n")
    (tmp_path / "bad.yaml").write_text(README[start : README.index("```", start)])
    assert main(["build", "bad.yaml"]) == 2
    assert _block_after("unetgen build bad.yaml") == capsys.readouterr().err
