"""YAML text → plain data, safely: YAML is data, never code.

Stricter than ``yaml.safe_load``: duplicate keys are an error (PyYAML keeps the last one silently), only
``true``/``false`` are booleans (YAML 1.1 turns ``on``, ``off``, ``yes`` and ``no`` into booleans), python tags are
refused with a clear message, and a document whose aliases expand to a huge tree ("billion laughs") is refused
before anything walks it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

MAX_SPEC_BYTES = 1 << 20
MAX_NODES = 10_000
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and an error for duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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
                    f"duplicate key '{key}' (first given on line {first.start_mark.line + 1}); keep only one",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


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
        SpecError: on a syntax error, a duplicate key, a python or other unknown tag, a document that expands to
            more than ``MAX_NODES`` nodes, or nesting too deep to parse.
    """
    loader = _StrictLoader(text)
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
    except yaml.constructor.ConstructorError as exc:
        raise SpecError(_describe_yaml_error(exc, source)) from None
    except yaml.YAMLError as exc:
        raise SpecError(_describe_yaml_error(exc, source)) from None
    except RecursionError:
        raise SpecError(f"{source}: the YAML is nested too deeply to be a spec") from None
    finally:
        loader.dispose()


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
