"""YAML text → plain data, safely: YAML is data, never code.

Stricter than ``yaml.safe_load``: duplicate keys are an error (PyYAML keeps the last one silently); plain values
are read as YAML 1.2 reads them, so only ``true``/``false`` are booleans (YAML 1.1 turns ``on``, ``off``, ``yes``
and ``no`` into booleans), ``010`` is ten, and ``1:30`` and ``2001-12-14`` are strings (YAML 1.1 reads 8, 90 and a
date); python tags are refused with a clear message; a value that cannot be read (``!!int abc``) or a control
character is an error with its line, never a traceback; and a document whose aliases expand to a huge tree
("billion laughs") is refused before anything walks it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

MAX_SPEC_BYTES = 1 << 20
MAX_NODES = 10_000
MAX_INT_DIGITS = 100
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
#: YAML 1.1 resolvers that surprise: yes/no booleans, sexagesimal and octal numbers, dates, ``=`` (a "value" tag).
_REPLACED_TAGS = {_BOOL_TAG, _INT_TAG, _FLOAT_TAG, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
#: What PyYAML's constructors raise for a value they cannot make (``!!int abc``, ``!!timestamp x``): the user's
#: error, reported with its line, not a bug.
_CONSTRUCTION_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, IndexError, KeyError)


class _TooManyNodes(Exception):
    """Raised while composing: the document already has more than ``MAX_NODES`` nodes, aliases not expanded."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 plain scalars and an error for duplicate keys."""

    _composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # Counted as the text is read, so a megabyte of values is refused after 10,000 of them, in milliseconds,
        # not after seconds of pure-Python parsing.
        self._composed += 1
        if self._composed > MAX_NODES:
            raise _TooManyNodes
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCTION_ERRORS:
            kind = node.tag.rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_quote(value)} as {kind}", node.start_mark
            ) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # YAML 1.2: decimal, 0o octal, 0x hex; ``010`` is ten (YAML 1.1: eight), ``1:30`` is not a number.
        text = self.construct_scalar(node)
        if len(text) > MAX_INT_DIGITS:  # Python refuses to convert over 4300 digits; no spec value comes close
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {len(text)} digits is too large for any field", node.start_mark
            )
        if text[:2] in ("0o", "0x"):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found a {node.id}", node.start_mark
            )
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a plain value, got {type(key).__name__}", key_node.start_mark
                ) from None
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_quote(key)} (first given on line {first.start_mark.line + 1}); keep only one",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution); ints before floats.
_StrictLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StrictLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_StrictLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_StrictLoader.add_constructor(_INT_TAG, _StrictLoader.construct_yaml_int)
# ``<<`` is a merge key in a mapping's key; as a value it is just the text.
_StrictLoader.add_constructor("tag:yaml.org,2002:merge", yaml.SafeLoader.construct_scalar)


def _quote(value: Any) -> str:
    """``value`` for a one-line message: repr, shortened; escapes newlines and other line breaks."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of nodes ``node`` becomes once every alias is expanded (memoised, so linear in the document)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a recursive alias counts as nothing more while it is being counted
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        memo[key] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[key]


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """Parse YAML text into plain Python data (dicts, lists, str, int, float, bool, None).

    Args:
        text: the YAML document.
        source: what to call the text in error messages (a file name).

    Returns:
        The document's data.

    Raises:
        SpecError: on a syntax error, a control character, a duplicate key, a python or other unknown tag, a value
            its tag cannot make (``!!int abc``) or an integer over ``MAX_INT_DIGITS`` digits, a document that
            expands to more than ``MAX_NODES`` nodes, or nesting too deep to parse.
    """
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here already
    except yaml.reader.ReaderError as exc:
        raise SpecError(_describe_reader_error(exc, text, source)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{source}: the file is empty; write a mapping such as 'depth: 5'")
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise SpecError(
                f"{source}: the document expands to {size:,} values (aliases included), more than the "
                f"{MAX_NODES:,} a spec may have; write the spec out without anchors and aliases"
            )
        return loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        raise SpecError(_describe_reader_error(exc, text, source)) from None
    except yaml.YAMLError as exc:
        raise SpecError(_describe_yaml_error(exc, source)) from None
    except RecursionError:
        raise SpecError(f"{source}: the YAML is nested too deeply to be a spec") from None
    except _TooManyNodes:
        raise SpecError(
            f"{source}: the document has more than the {MAX_NODES:,} values a spec may have; is this a spec?"
        ) from None
    except _CONSTRUCTION_ERRORS as exc:  # a tagged value PyYAML cannot make (e.g. ``!!set`` of a list)
        detail = " ".join(str(exc).split())[:160]
        raise SpecError(f"{source}: invalid YAML: cannot read a value ({type(exc).__name__}: {detail})") from None
    finally:
        loader.dispose()


def _describe_reader_error(exc: yaml.reader.ReaderError, text: str, source: str) -> str:
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return f"{source}:{line}:{column}: control character U+{code:04X} is not allowed in YAML; is this a YAML spec?"


def _describe_yaml_error(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc)
    if "could not determine a constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        return f"{where}: tag '{tag}' is not allowed: a spec is plain data (no python objects or custom tags)"
    problem = " ".join(problem.split())
    return f"{where}: invalid YAML: {problem}"


def read_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file, with the checks of :func:`parse_yaml`.

    Args:
        path: the file to read.

    Returns:
        The document's data.

    Raises:
        SpecError: when the file is missing, unreadable, too large, not UTF-8, or not valid YAML.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a few lines of YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); is this a YAML spec?") from None
    if "\x00" in text:
        raise SpecError(f"{path}: contains NUL bytes; is this a YAML spec?")
    return parse_yaml(text, str(path))
