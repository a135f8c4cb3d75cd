"""Attack the parsers: a seeded mutation fuzzer over every preset, run through the real command.

Every mutated spec must either build (exit 0, a table on stdout) or be refused with one line per problem, each
``unetgen: error: <file>...`` on stderr, and exit 2 -- never a traceback, never exit 1 (a bug), never a hang. The
mutations are what people and tools get wrong: dropped, added and misspelt keys; wrong types; negative, zero, huge
and float values; lists of the wrong length; unicode; empty files; binary junk; truncated and reindented text;
deeply nested YAML; anchors and aliases, benign and as a "billion laughs"; YAML 1.1 surprises (``yes``, ``1:30``,
``010``, dates); python and custom tags; duplicate keys.

The cases are drawn from a fixed seed, so a failure names a case that fails again the same way: the failure message
shows the case's label and text. ``build`` without ``--save`` is pure arithmetic, so hundreds of cases take seconds.
"""

from __future__ import annotations

import random
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import yaml

import unetgen
from unetgen.cli import main
from unetgen.spec.yaml_loader import parse_yaml

SEED = 20150518  # the U-Net paper's arXiv date; any fixed value will do
PRESETS = unetgen.preset_names()
CLI_CASES = 600  # shared evenly by the presets
LIBRARY_CASES = 400
SIZE_CASES = 200
#: Every run executes exactly this many fuzz cases (asserted): 600 mutated presets through ``unetgen build``, 400
#: straight into ``parse_spec``/``spec_from_dict``, 200 sizes typed on the command line.
TOTAL_CASES = 1200
assert TOTAL_CASES == CLI_CASES + LIBRARY_CASES + SIZE_CASES


def _cases_for(preset: str) -> int:
    index = PRESETS.index(preset)
    return CLI_CASES // len(PRESETS) + (index < CLI_CASES % len(PRESETS))
#: Not a speed target: ``build`` is integer arithmetic (milliseconds), so a case that takes this long is a hang or
#: a runaway computation, which is a bug.
HANG_SECONDS = 10.0

_executed: dict[str, int] = {}


def _preset_text(name: str) -> str:
    return (resources.files("unetgen.presets") / f"{name}.yaml").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Values and tokens the mutations draw from
# ---------------------------------------------------------------------------------------------------------------

NUMBERS: list[Any] = [
    0, -1, -64, 1, 2, 3, 7, 8, 13, 255, 4097, 65537, 10**6, 10**9, 2**31, 2**63, 10**30, 10**200,
    -(10**30), 0.0, -0.0, 0.5, 2.5, 1.0, 3.999, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"),
]
STRINGS = [
    "", " ", "relu", "RELU", "batchnorm", "Batch", "valid ", "same", "transpose", "\t", "none", "None", "null",
    "ünïcödé", "名前", "🙂🙃", "\u202ertl", "a\u2028b", "a\nb", "a\x85b", "e\u0301", "\ufeffbom", "x" * 300,
    "yes", "no", "on", "off", "true", "false", "1", "5", "1e3", "0x10", "1:30", "010",
]
OTHERS: list[Any] = [None, True, False, [], {}, [1], [[1, 2]], {"a": 1}, [None], [True, False], [[[]]], [-1, 0]]

#: Raw YAML tokens written in place of a value: the text the user typed, before any parser touched it.
TOKENS = [
    "yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "~", "null", "Null", "true", "True", "FALSE",
    "1:30", "0:05", "010", "09", "0x10", "0o17", "0b101", "1_000", "+5", "-0", "1e3", "1.0e+3", ".5", "5.",
    ".inf", "-.inf", ".nan", ".NaN", "2001-12-14", "2001-13-45", "2001-12-14 21:59:43.10 -5", "=", "<<",
    "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!python/tuple [1, 2]",
    "!!python/object/new:list []", "!!binary aGVsbG8=", "!!binary '@@@'", "!!int abc", "!!int 0x", "!!float x",
    "!!timestamp junk", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!str 5", "!!int '5'", "!!bool yes",
    "!!null x", "!custom 1", "!<tag:example.com,2000:x> 1", "!!map [1]", "!!seq {a: 1}", "&a 1", "*undefined",
    "[", "]", "{", "}", "[1, 2", "{a: 1", '"unterminated', "'unterminated", "|", ">", "@at", "`tick", "%", "!",
    "&", "*", "? complex", "-", "- 1", "{a: 1}", "{depth: 5}", "[[]]", "[[[1]]]", "[1, [2, [3]]]", '""', '" "',
    "'\\t'", '"\\0"', '"\\x85"', '"\\u2028"', '"\\U0001F642"', "ünïcödé", "名前", "🙂", "\u202erlt", "\t5",
    "5 # comment", "5 #", "'5'", '"5"', "[572, 572", "[572, 572, 572]", "[572]", "[]", "[0, 0]", "[-572, 572]",
    "[5.5, 572]", "[true, 572]", "[10000000, 10000000]", "99999999999999999999999999999999", "9" * 5000,
    "0x" + "f" * 5000, "1e99999", "-1e99999", "x" * 5000,
]


def _misspell(rng: random.Random, word: str) -> str:
    if not word:
        return "x"
    i = rng.randrange(len(word))
    op = rng.randrange(5)
    if op == 0:
        return word[:i] + word[i + 1 :]  # drop a letter
    if op == 1:
        return word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz_") + word[i:]  # add one
    if op == 2 and len(word) > 1:
        j = min(i + 1, len(word) - 1)
        return word[:i] + word[j] + word[i] + word[j + 1 :] if i != j else word[::-1]  # swap two
    if op == 3:
        return word.upper()
    return word.replace("_", "-") if "_" in word else word + "s"


def _random_value(rng: random.Random) -> Any:
    pool = rng.choice([NUMBERS, STRINGS, OTHERS])
    return rng.choice(pool)


def _wrong_length(rng: random.Random, value: list[Any]) -> list[Any]:
    value = list(value)
    if value and rng.random() < 0.5:
        del value[rng.randrange(len(value))]
    else:
        value.insert(rng.randrange(len(value) + 1), value[0] if value else rng.choice(NUMBERS))
    return value


# ---------------------------------------------------------------------------------------------------------------
# Data mutations: change the parsed preset, then write it back as YAML
# ---------------------------------------------------------------------------------------------------------------

_FIELDS = list(unetgen.UNetSpec.model_fields)
_CHOICES = [c for cs in unetgen.spec.fields._CHOICES.values() for c in cs]


def _data_mutation(rng: random.Random, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    data = dict(data)
    keys = list(data)
    op = rng.randrange(11)
    if op == 0 and keys:
        key = rng.choice(keys)
        del data[key]
        return f"drop {key}", data
    if op == 1:
        key = rng.choice(["nope", "depht", "Depth", "layers", "dropout_rate", "", "名前", "a b", "__class__", 5])
        data[key] = _random_value(rng)
        return f"add {key!r}", data
    if op == 2 and keys:
        key = rng.choice(keys)
        data[_misspell(rng, key)] = data.pop(key)
        return f"misspell {key}", data
    if op == 3:
        key = rng.choice(_FIELDS)
        data[key] = _random_value(rng)
        return f"{key} = {data[key]!r:.40}", data
    if op == 4:
        key = rng.choice(_FIELDS)
        data[key] = rng.choice(NUMBERS)
        return f"{key} = number {data[key]!r:.40}", data
    if op == 5:
        lists = [k for k, v in data.items() if isinstance(v, list)] or ["input_size"]
        key = rng.choice(lists)
        data[key] = _wrong_length(rng, data[key] if isinstance(data.get(key), list) else [])
        return f"{key} wrong length", data
    if op == 6:
        lists = [k for k, v in data.items() if isinstance(v, list) and v] or ["input_size"]
        key = rng.choice(lists)
        value = list(data[key]) if isinstance(data.get(key), list) and data[key] else [1]
        value[rng.randrange(len(value))] = _random_value(rng)
        data[key] = value
        return f"{key} entry", data
    if op == 7:
        key = rng.choice([k for k, v in data.items() if isinstance(v, str)] or ["name"])
        data[key] = rng.choice(STRINGS)
        return f"{key} string", data
    if op == 8:
        key = rng.choice(_FIELDS)
        data[key] = rng.choice(_CHOICES + [_misspell(rng, rng.choice(_CHOICES))])
        return f"{key} = option {data[key]!r}", data
    if op == 9:
        depth = rng.choice([1, 2, 3, 4, 6, 8, 12, 13])
        data["depth"] = depth
        return f"depth = {depth}", data
    for _ in range(rng.randint(2, 4)):  # several at once
        _, data = _data_mutation(rng, data)
    return "several", data


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6)


# ---------------------------------------------------------------------------------------------------------------
# Text mutations: change what the user typed
# ---------------------------------------------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<key>[A-Za-z_]+):(?P<value>.*)$")


def _billion_laughs(levels: int, fan: int, where: str) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fan)}]")
    lines.append(f"{where}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def _text_mutation(rng: random.Random, text: str) -> tuple[str, str | bytes]:
    lines = text.splitlines()
    fields = [(i, m) for i, line in enumerate(lines) if (m := _LINE.match(line))]
    op = rng.randrange(16)
    if op == 0:
        i, m = rng.choice(fields)
        token = rng.choice(TOKENS)
        lines[i] = f"{m['key']}: {token}"
        return f"{m['key']}: {token[:40]}", "\n".join(lines) + "\n"
    if op == 1:
        i, m = rng.choice(fields)
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
        return f"duplicate {m['key']}", "\n".join(lines) + "\n"
    if op == 2:
        choice = rng.choice(["", " ", "\n\n", "# only a comment\n", "---\n", "...\n", "---\n...\n", "~\n", "\ufeff"])
        return f"empty {choice!r}", choice
    if op == 3:
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 64, 1000])))
        return "binary junk", junk
    if op == 4:
        raw = text.encode("utf-8")
        at = rng.randrange(len(raw) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return f"junk at byte {at}", raw[:at] + junk + raw[at:]
    if op == 5:
        at = rng.randrange(len(text) + 1)
        return f"truncated at {at}", text[:at]
    if op == 6:
        depth = rng.choice([10, 100, 1000, 5000, 30000])
        kind = rng.randrange(4)
        if kind == 0:
            nested = "[" * depth + "]" * depth
        elif kind == 1:
            nested = "{a: " * depth + "1" + "}" * depth
        elif kind == 2:
            nested = "[" * depth + "1" + "]" * depth
        else:
            depth = min(depth, 400)  # block style grows quadratically in size
            indents = [" " * (2 * level + 2) for level in range(depth + 1)]
            nested = "\n" + "".join(f"{indent}a:\n" for indent in indents[:-1]) + indents[-1] + "1"
        i, m = rng.choice(fields)
        lines[i] = f"{m['key']}: {nested}"
        return f"{m['key']} nested {depth} deep ({kind})", "\n".join(lines) + "\n"
    if op == 7:
        levels, fan = rng.choice([(9, 10), (5, 10), (30, 2), (3, 10), (4, 4)])
        where = rng.choice([m["key"] for _, m in fields] + ["nope"])
        body = [line for line in lines if not line.startswith(f"{where}:")]
        return f"alias bomb {levels}x{fan} at {where}", "\n".join(body) + "\n" + _billion_laughs(levels, fan, where)
    if op == 8:
        # anchors and aliases: a value reused through an alias (under its own key again: a duplicate key), or
        # the field given through a merge key (the same spec, which must still build)
        i, m = rng.choice(fields)
        value = m["value"].strip()
        if not value or value.startswith(("&", "*", "!", "#")):
            value = "x"
        if rng.random() < 0.5:
            lines[i] = f"{m['key']}: &shared {value}"
            lines.append(f"{m['key']}: *shared")  # and a duplicate key through an alias
        else:
            lines[i] = f"<<: {{{m['key']}: {value}}}"
        return f"anchor on {m['key']}", "\n".join(lines) + "\n"
    if op == 9:
        i, m = rng.choice(fields)
        lines[i] = f"{_misspell(rng, m['key'])}:{m['value']}"
        return f"misspell {m['key']} in text", "\n".join(lines) + "\n"
    if op == 10:
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(["\t", "  ", " ", "- ", "? ", "  - "]) + lines[i]
        return f"indent line {i}", "\n".join(lines) + "\n"
    if op == 11:
        i = rng.randrange(len(lines))
        del lines[i]
        return f"delete line {i}", "\n".join(lines) + "\n"
    if op == 12:
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            chars[rng.randrange(len(chars))] = rng.choice(":-[]{}#&*!|>'\"%@`,? \t\n\u00a0\u2028\x85é🙂\x00")
        return "character flips", "".join(chars)
    if op == 13:
        second = rng.choice(["---\ndepth: 3\n", "---\n", "--- !!python/object:os.system\n", "%YAML 1.1\n---\n"])
        return "second document", (text + second if rng.random() < 0.5 else second + text)
    if op == 14:
        encoding = rng.choice(["utf-16", "utf-32", "latin-1", "utf-8-sig"])
        return f"encoded {encoding}", ("name: Çiçek é\n" + text).encode(encoding, errors="replace")
    i, m = rng.choice(fields)
    keys = ["", "'a\nb'", '"a\\nb"', '"a\\u2028b"', "5", "null", "true", "[1, 2]", "{a: 1}", "? [1]", "名前"]
    key = rng.choice(keys)
    lines.insert(i, f"{key}: 1")
    return f"odd key {key!r}", "\n".join(lines) + "\n"


def _cases(name: str, count: int) -> list[tuple[str, str | bytes]]:
    rng = random.Random(f"{SEED}-{name}")
    text = _preset_text(name)
    data = parse_yaml(text)
    cases: list[tuple[str, str | bytes]] = []
    while len(cases) < count:
        if rng.random() < 0.45:
            label, mutated = _data_mutation(rng, data)
            cases.append((f"data: {label}", _dump(mutated)))
        else:
            label, content = _text_mutation(rng, text)
            cases.append((f"text: {label}", content))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# What every case must do
# ---------------------------------------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses what it cannot parse
        code = exc.code if isinstance(exc.code, int) else 1
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    return code, out, err, elapsed


def _check_outcome(code: int, out: str, err: str, elapsed: float, name: str | None) -> str | None:
    """Why the outcome breaks the promise, or None when it keeps it."""
    if elapsed > HANG_SECONDS:
        return f"took {elapsed:.1f} s"
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if code == 0:
        return None if "parameters" in out and "input " in out else "exit 0 without a table"
    if code != 2:
        return f"exit {code}"
    if out:
        return "exit 2 with output on stdout"
    lines = err.splitlines()
    if not lines:
        return "exit 2 without a message"
    for line in lines:
        if not line.startswith("unetgen: error: "):
            return f"line without the error prefix: {line[:120]!r}"
        if name is not None and name not in line:
            return f"line without the file name: {line[:120]!r}"
        if len(line) > 600:
            return f"line of {len(line)} characters"
    return None


def _report(failures: list[str]) -> str:
    return f"{len(failures)} fuzz cases broke the promise:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("preset", PRESETS)
def test_mutated_presets_build_or_fail_cleanly(preset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures = []
    built = 0
    cases = _cases(preset, _cases_for(preset))
    for index, (label, content) in enumerate(cases):
        path = tmp_path / f"fuzz{index}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        code, out, err, elapsed = _run(capsys, ["build", path.name])
        built += code == 0
        problem = _check_outcome(code, out, err, elapsed, path.name)
        if problem:
            shown = content if isinstance(content, str) else content[:200]
            failures.append(f"[{preset} #{index} {label}] {problem}\n    {err.strip()[:300]!r}\n    {shown!r:.300}")
    _executed[f"cli {preset}"] = len(cases)
    assert not failures, _report(failures)
    assert 0 < built < len(cases)  # the mutations hit both sides: some still build, most are refused


def _library_case(rng: random.Random, presets: dict[str, str]) -> tuple[str, Callable[[], Any]]:
    name = rng.choice(sorted(presets))
    if rng.random() < 0.5:
        label, content = _text_mutation(rng, presets[name])
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        return f"{name} text: {label}", lambda: unetgen.parse_spec(content, source="<fuzz>")
    label, data = _data_mutation(rng, parse_yaml(presets[name]))
    if rng.random() < 0.3:  # things YAML cannot produce but Python callers can pass
        data[rng.choice(_FIELDS)] = rng.choice([object(), (1, 2), {1, 2}, b"bytes", 1j, range(3), 10**5000])
        label += " + python object"
    return f"{name} dict: {label}", lambda: unetgen.spec_from_dict(data, source="<fuzz>")


def test_library_raises_only_spec_errors():
    """parse_spec and spec_from_dict return a spec or raise SpecError, one line per problem naming the source."""
    rng = random.Random(SEED)
    presets = {name: _preset_text(name) for name in PRESETS}
    failures = []
    for index in range(LIBRARY_CASES):
        label, call = _library_case(rng, presets)
        start = time.perf_counter()
        try:
            spec = call()
        except unetgen.SpecError as exc:
            lines = str(exc).splitlines()
            if not lines or any(not line.startswith("<fuzz>") or len(line) > 600 for line in lines):
                failures.append(f"[#{index} {label}] bad message {str(exc)[:300]!r}")
        except Exception as exc:  # noqa: BLE001 - any other exception is the finding
            failures.append(f"[#{index} {label}] {type(exc).__name__}: {str(exc)[:200]}")
        else:
            if not isinstance(spec, unetgen.UNetSpec):
                failures.append(f"[#{index} {label}] returned {type(spec).__name__}")
        if time.perf_counter() - start > HANG_SECONDS:
            failures.append(f"[#{index} {label}] took {time.perf_counter() - start:.1f} s")
    _executed["library"] = LIBRARY_CASES
    assert not failures, _report(failures)


#: Sizes as typed: valid and invalid numbers for each preset, zero, negative, huge, and things that are no number.
SIZES = [
    "572", "588", "571", "188", "204", "256", "255", "101", "40", "224", "192", "132", "116", "2", "1", "17", "64",
    "999996", "1000000", "1000001", "0", "-1", "-572", "10000000000", "9" * 40, "9" * 4300, "9" * 5000, "-" + "9" * 30,
    "5.5", "1e3", "abc", "0x10", "", " ", "٥", "５७२", "+572", "--1", "nan", "-0", "0572",
]


def _size_argv(rng: random.Random) -> list[str]:
    preset = rng.choice(PRESETS)
    command = rng.choice(["build", "build", "draw", "sizes"])
    count = rng.choice([0, 1, 2, 3, 3, 4]) if rng.random() < 0.3 else unetgen.preset(preset).spatial_dims
    values = [rng.choice(SIZES) for _ in range(count)]
    if command == "sizes":
        option = rng.choice(["--near", "--range", "--output-size", "--input-size"])
        values = values[:2] if option == "--range" else values[:1] if option != "--input-size" else values
        return ["sizes", preset, option, *values]
    argv = [command, preset, "--input-size", *values]
    if command == "draw":
        argv += ["-o", "-"]
    elif rng.random() < 0.2:
        argv.append("--json")
    return argv


def test_sizes_typed_on_the_command_line_fail_cleanly(capsys):
    """Random sizes for ``build``/``draw --input-size`` and ``sizes --near/--range/--output-size``: zero, negative,
    huge, not numbers, the wrong count. Each gives exit 0 or exit 2 with exactly one line."""
    rng = random.Random(SEED + 1)
    failures = []
    for index in range(SIZE_CASES):
        argv = _size_argv(rng)
        code, out, err, elapsed = _run(capsys, argv)
        problem = _check_outcome(code, out, err, elapsed, None)
        if code == 2 and len(err.splitlines()) != 1:
            problem = f"{len(err.splitlines())} lines"
        if code == 0 and problem == "exit 0 without a table":
            problem = None if out.strip() else "exit 0 without output"
        if problem:
            shown = " ".join(v if len(v) < 15 else f"{v[:8]}...({len(v)})" for v in argv)
            failures.append(f"[#{index} {shown}] {problem}: {err.strip()[:300]!r}")
    _executed["sizes"] = SIZE_CASES
    assert not failures, _report(failures)


def test_case_count():
    """The fuzz tests above ran exactly ``TOTAL_CASES`` cases (when they ran in this session)."""
    if len(_executed) < len(PRESETS) + 2:
        pytest.skip("run with the whole file to count the cases")
    assert sum(_executed.values()) == TOTAL_CASES


#: The largest networks a spec can describe: ``build`` must describe them (or refuse them) at once, in bounded
#: memory, since it allocates nothing.
EXTREMES = {
    "deepest": "depth: 12\n",
    "widest kernels": "depth: 12\nkernel_size: 15\n",
    "largest pools": "depth: 12\npool_sizes: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]\n",
    "3D, everything at its largest": "spatial_dims: 3\ndepth: 12\nkernel_size: 15\npadding: same\noutput: same\n"
    "pool_sizes: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]\nconvs_per_level: 16\nwidth: 65536\ngrowth: 4.0\n"
    "input_size: [1000000, 1000000, 1000000]\n",
}
MEMORY_CAP = 2 << 30  # address space of the child: a runaway allocation fails there, not on the machine


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.parametrize("extreme", list(EXTREMES))
def test_extreme_specs_are_described_at_once(tmp_path, extreme):
    """A separate process, capped in time and memory, so that a runaway plan fails this test, not the machine."""
    path = tmp_path / "extreme.yaml"
    path.write_text(EXTREMES[extreme])
    command = [sys.executable, "-m", "unetgen.cli", "build", str(path)]
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=HANG_SECONDS, preexec_fn=_cap_memory, cwd=tmp_path
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"unetgen build of {EXTREMES[extreme]!r} ran over {HANG_SECONDS} s")
    assert run.returncode in (0, 2), run.stderr[-500:]
    if run.returncode == 2:
        assert run.stdout == "" and len(run.stderr.splitlines()) == 1, run.stderr


# What the fuzzer found, pinned: (YAML text, the one error line's parts). Each was a traceback (exit 1), several
# lines for one problem, or a line that did not name the file, before it was fixed.
FOUND = [
    ("name: 2001-13-45\ndepth: !!int abc\n", ["fuzz.yaml:2:8: invalid YAML: cannot read 'abc' as int"]),
    ("negative_slope: !!timestamp junk\n", ["fuzz.yaml:1:17: invalid YAML: cannot read 'junk' as timestamp"]),
    ("growth: !!float x\n", ["cannot read 'x' as float"]),
    ("activation: !!map [1]\n", ["fuzz.yaml:1:13: invalid YAML: expected a mapping, found a sequence"]),
    ("depth: " + "9" * 5000 + "\n", ["fuzz.yaml:1:8: invalid YAML: an integer of 5000 digits is too large"]),
    ("depth: 0x" + "f" * 5000 + "\n", ["an integer of 5002 digits is too large"]),
    ("name: unet\x15\n", ["fuzz.yaml:1:11: control character U+0015 is not allowed in YAML"]),
    ('"a\\nb": 1\n', ["fuzz.yaml: 'a\\nb': unknown field"]),
    ('"dep\\u2028th": 1\n', ["fuzz.yaml: 'dep\\u2028th': unknown field"]),
    ("5: 1\n", ["fuzz.yaml: key 5: a field name is text, such as 'depth'"]),
    ("channels: [a, 128, 256, 512, 1024]\n", ["fuzz.yaml: channels.0: input should be an integer or a list of "
                                             "integers (got 'a')"]),
    ("channels: [[64, x], 128, 256, 512, 1024]\n", ["fuzz.yaml: channels.0.1: input should be a valid integer"]),
    ("input_size: [571, 572]\n", ["fuzz.yaml: the spec's input_size 571×572: height: encoder.1 max-pools an odd "
                                  "size (567); nearest valid sizes: 556, 572"]),
    ("5\n", ["fuzz.yaml: a spec is a mapping of fields (e.g. 'depth: 5'), got an int"]),
    # was refused only after 15 s of parsing all of it; now after its first 10,000 values
    ("channels: [" + "1, " * 300_000 + "1]\n", ["fuzz.yaml: the document has more than the 10,000 values"]),
]


@pytest.mark.parametrize("text,expected", FOUND, ids=[text[:20] for text, _ in FOUND])
def test_found_by_the_fuzzer(tmp_path, capsys, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fuzz.yaml").write_text(text, encoding="utf-8")
    code, out, err, _ = _run(capsys, ["build", "fuzz.yaml"])
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    for part in expected:
        assert part in err, (part, err)


def test_yaml_reads_plain_values_as_yaml_1_2():
    """Only true/false are booleans; 010 is ten; sexagesimal numbers, dates, '=' and '<<' stay text."""
    text = "a: 010\nb: 1:30\nc: 2001-12-14\nd: =\ne: <<\nf: 0x10\ng: 0o17\nh: 1e3\ni: -.inf\nj: +5\nk: 1_000\nl: yes\n"
    assert parse_yaml(text) == {"a": 10, "b": "1:30", "c": "2001-12-14", "d": "=", "e": "<<", "f": 16, "g": 15,
                                "h": 1000.0, "i": float("-inf"), "j": 5, "k": "1_000", "l": "yes"}
    assert parse_yaml("base: &b {depth: 4}\nspec:\n  <<: *b\n  width: 8\n")["spec"] == {"depth": 4, "width": 8}
    assert unetgen.parse_spec("name: 2001-12-14\nup_bias: true\n").name == "2001-12-14"
