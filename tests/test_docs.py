"""The docs stay true: every example in README.md and docs/*.md is run or checked; the tables list what the code has.

Each fenced block of a page is one test case, checked by its kind:

- a block without a language that shows a command is a terminal session: each ``$ unetgen ...`` line runs, and
  what it prints must be what the block shows under it (``…`` stands for text left out: a whole line of it, any
  lines); a shown ``unetgen: error:`` means exit status 2, else 0;
- ``python`` runs, and each ``print(...)`` line's comment is what it prints;
- ``yaml`` is a spec: a file named just above it (`` `bad.yaml`: ``) is written for the page's sessions (which
  check it); otherwise it must be valid, and equal to the preset file it shows (or, shown in part, agree with it);
- ``bash`` lines are commands to type: ``unetgen`` ones must parse with the command's own parser, the install and
  test commands must be the ones ``.ci/run`` runs;
- ``text``, or no language and no command, is a figure (a diagram), not an example.

Examples that need an exported ONNX file are checked where that file is made (``ELSEWHERE``).
"""

from __future__ import annotations

import re
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import unetgen
from conftest import run_main
from unetgen.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))]

#: Blocks checked by another test, which reads them from the page: (page, a line of the block) → that test's file.
ELSEWHERE = {
    ("docs/onnx.md", "$ unetgen export --onnx"): "tests/test_export.py",
    ("docs/onnx.md", "$ unetgen inspect paper.onnx"): "tests/test_export.py",
    ("docs/onnx.md", 'session = unetgen.onnx_session("paper.onnx")'): "tests/test_export.py",
    ("docs/training.md", "$ unetgen train"): "tests/test_training_docs.py",
    ("docs/training.md", "torchrun --nproc-per-node 2"): "tests/test_training_ddp.py",
}


def _read(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    line: int
    lang: str
    text: str
    before: str  # the page's text from the previous block to this one

    @property
    def file_name(self) -> str | None:
        """The file this block is, when the text just above it names one (`` `bad.yaml`: ``)."""
        match = re.search(r"`([\w.-]+)`:\s*$", self.before)
        return match.group(1) if match else None

    @property
    def elsewhere(self) -> str | None:
        for (page, line), test in ELSEWHERE.items():
            if page == self.page and line in self.text:
                return test
        return None


def blocks(page: str) -> list[Block]:
    text = _read(page)
    found, end = [], 0
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match.group(1), match.group(2), text[end : match.start()]))
        end = match.end()
    return found


BLOCKS = [block for page in PAGES for block in blocks(page)]


def section(page: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    text = _read(page)
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    following = re.compile(rf"^#{{1,{len(level)}}} ", flags=re.M)
    match = following.search(text, start + len(heading) + 2)
    return text[start : match.start() if match else len(text)]


# --- running what a block shows -------------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with what the examples take as given: the presets folder, a 300×517 grey image as PNG and .npy, and
    a small network's checkpoint `model.pt`; the command's help at 80 columns."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    (tmp_path / "presets").symlink_to(ROOT / "presets")
    grey = (np.random.default_rng(0).random((300, 517)) * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "slide.png")
    np.save(tmp_path / "slide.npy", grey.astype(np.float32) / 255)
    unetgen.save(unetgen.build(unetgen.UNetSpec(depth=3, width=4), seed=0), tmp_path / "model.pt")
    yield tmp_path
    unetgen.set_memory_limit(None)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the command as a user would; its exit status and everything it printed."""
    status, out, err = run_main(argv, capsys)
    return status, out + err


def shown_matches(shown: str, printed: str) -> bool:
    """Whether the output shown in a page is what was printed; `…` stands for text left out."""
    if "…" not in shown:
        return shown == printed
    parts = []
    for line in shown.splitlines(keepends=True):
        if line.strip() == "…":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("…")))
    return re.fullmatch("".join(parts), printed) is not None


def check_session(block: Block, capsys) -> None:
    for session in re.split(r"^\$ ", block.text, flags=re.M)[1:]:
        command, _, shown = session.partition("\n")
        argv = shlex.split(command)
        assert argv[0] == "unetgen", f"{block.page}:{block.line}: a session runs unetgen, not {argv[0]}"
        status, printed = run_cli(argv[1:], capsys)
        assert shown_matches(shown, printed), f"$ {command}\n--- shown in {block.page}:\n{shown}--- printed:\n{printed}"
        assert status == (2 if "unetgen: error:" in shown else 0), f"$ {command}: exit status {status}"


def check_python(block: Block, capsys) -> None:
    capsys.readouterr()
    exec(compile(block.text, block.page, "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out.splitlines()
    claimed = [line.split("# ")[-1] for line in block.text.splitlines() if "print(" in line]
    assert printed == claimed


def check_yaml(block: Block) -> None:
    if block.file_name:
        runs = re.compile(rf"^\$ unetgen .*\b{re.escape(block.file_name)}\b", flags=re.M)
        used = [b for b in blocks(block.page) if not b.lang and runs.search(b.text)]
        if any("unetgen: error:" in b.text for b in used):
            return  # a bad file: the session that runs it shows and checks its errors
    spec = unetgen.parse_spec(block.text, block.file_name or f"{block.page}:{block.line}")
    presets = {path.name: path for path in (ROOT / "presets").glob("*.yaml")}
    named = re.findall(r"`presets/(\w+\.yaml)`", block.before)
    for name in named:
        text = presets[name].read_text(encoding="utf-8")
        if block.text == text:
            continue
        whole = yaml.safe_load(text)
        shown = yaml.safe_load(block.text)
        assert {key: whole.get(key) for key in shown} == shown, f"{block.page}:{block.line} differs from presets/{name}"
    assert spec is not None


def _installs(args: list[str], ci_args: list[str]) -> bool:
    """Whether .ci/run's ``pip install ci_args`` installs what ``pip install args`` does (the same extras, or more)."""

    def split(argument: str) -> tuple[str, set[str]]:
        match = re.fullmatch(r"(.*)\[(.*)\]", argument)
        return (match.group(1), set(match.group(2).split(","))) if match else (argument, set())

    pins = {i for i, arg in enumerate(ci_args) if arg == "-c"}
    ci_args = [arg for i, arg in enumerate(ci_args) if not {i, i - 1} & pins]  # a constraints file pins, adds nothing
    if len(args) != len(ci_args):
        return False
    return all(
        name == ci_name and extras <= ci_extras
        for (name, extras), (ci_name, ci_extras) in zip(map(split, args), map(split, ci_args))
    )


def check_bash(block: Block) -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    installs = [shlex.split(line)[5:] for line in ci if line.startswith("python -m pip install --quiet ")]
    for line in block.text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        for command in filter(None, (part.strip() for part in line.split("&&"))):
            argv = shlex.split(command)
            if argv[0] == "unetgen":
                try:
                    _parser().parse_args(argv[1:])
                except SystemExit:
                    pytest.fail(f"{block.page}:{block.line}: `{command}` is not a valid command line")
            elif argv[:2] == ["pip", "install"]:
                assert any(_installs(argv[2:], ci_args) for ci_args in installs), (
                    f"{block.page}:{block.line}: .ci/run does not install {argv[2:]}"
                )
            elif command == "python -m pytest -q":
                assert ci[-1] == command, "the README's test command is what .ci/run runs last"
            else:
                pytest.fail(f"{block.page}:{block.line}: nothing checks `{command}`")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_example_is_true(block, workdir, capsys):
    if block.elsewhere:
        assert block.page in (ROOT / block.elsewhere).read_text(encoding="utf-8")
        pytest.skip(f"checked in {block.elsewhere}")
    for given in blocks(block.page):
        if given.file_name:
            (workdir / given.file_name).write_text(given.text, encoding="utf-8")
    if block.lang == "" and re.search(r"^(\$ |unetgen )", block.text, flags=re.M):
        assert block.text.startswith("$ "), f"{block.page}:{block.line}: a terminal session starts with `$ unetgen`"
        check_session(block, capsys)
    elif block.lang in ("", "text"):
        pass  # a figure (a diagram, a layout), not an example
    elif block.lang == "python":
        check_python(block, capsys)
    elif block.lang == "yaml":
        check_yaml(block)
    elif block.lang == "bash":
        check_bash(block)
    else:
        pytest.fail(f"{block.page}:{block.line}: nothing checks a ```{block.lang} block")


def test_every_elsewhere_block_exists():
    for (page, line), test in ELSEWHERE.items():
        assert [b for b in blocks(page) if line in b.text], f"{page} no longer shows `{line}`"


# --- the pages and their links --------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_lead_somewhere():
    for page in PAGES:
        text = re.sub(r"^```.*?^```$", "", _read(page), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (ROOT / page).parent / path if path else ROOT / page
            assert file.exists(), f"{page}: link to {target}: no such file"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), flags=re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page}: link to {target}: no such heading"


def test_readme_links_every_page():
    readme = _read("README.md")
    for page in PAGES[1:]:
        assert f"]({page})" in readme, f"README.md does not link {page}"


def test_readme_is_short():
    assert len(_read("README.md").splitlines()) <= 200


# --- the tables -----------------------------------------------------------------------------------------------------


def _type_text(annotation: typing.Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return r" \| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return f"list[{_type_text(typing.get_args(annotation)[0])}]"
    return "None" if annotation is type(None) else annotation.__name__


def _default_text(value: typing.Any) -> str:
    if value is None:
        return "`none`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "" if value == "" else f"`{value}`"


def test_spec_table_lists_every_field():
    page = _read("docs/spec.md")
    documented = set(re.findall(r"^\| `(\w+)` \|", page, flags=re.M)) - set(unetgen.preset_names())
    assert documented == set(unetgen.UNetSpec.model_fields)
    # each row is the field's type, default and description, as the code has them
    rows = re.findall(r"^\| `\w+` \|.*\|$", page, flags=re.M)
    expected = [
        f"| `{name}` | {_type_text(field.annotation)} | {_default_text(field.default)} | {field.description} |"
        for name, field in unetgen.UNetSpec.model_fields.items()
    ]
    assert rows == expected


def test_preset_table_is_real():
    readme = _read("README.md")
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| ([\d,]+)", readme, flags=re.M)
    presets = {name: (shapes.strip(), params) for name, shapes, params in rows if name in unetgen.preset_names()}
    assert set(presets) == set(unetgen.preset_names())
    for name, (shapes, params) in presets.items():
        plan = unetgen.plan(name)
        shown = "×".join(map(str, plan.input_shape)) + " → " + "×".join(map(str, plan.output_shape))
        assert shapes == shown
        assert int(params.replace(",", "")) in (plan.parameters, plan.parameters - plan.norm_parameters)


# --- the command ----------------------------------------------------------------------------------------------------


def _commands() -> list[str]:
    parser = _parser()
    (subparsers,) = [action for action in parser._actions if action.choices and isinstance(action.choices, dict)]
    return list(subparsers.choices)


def test_every_command_is_documented():
    """docs/cli.md has a section and the help of every command; the README, one example of each."""
    cli = _read("docs/cli.md")
    readme_examples = "\n".join(b.text for b in blocks("README.md") if b.lang in ("", "bash"))
    for command in _commands():
        assert f"\n## `unetgen {command}`\n" in cli, f"docs/cli.md: no section for unetgen {command}"
        assert f"$ unetgen {command} --help\n" in section("docs/cli.md", f"## `unetgen {command}`")
        assert re.search(rf"^(\$ )?unetgen {command}\b", readme_examples, flags=re.M), f"README: no unetgen {command}"
    assert "$ unetgen --help\n" in cli
