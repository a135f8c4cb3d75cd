"""`unetgen schema`: the spec's JSON Schema for editors agrees with the model, is checked in, and stays current."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pydantic
import pytest

import unetgen
from unetgen.cli import main
from unetgen.spec.yaml_loader import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKED_IN = ROOT / "docs" / "spec.schema.json"
MODELINE = "# yaml-language-server: $schema=../docs/spec.schema.json"
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _schema() -> dict:
    return json.loads(CHECKED_IN.read_text(encoding="utf-8"))


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def _yaml_blocks() -> list[tuple[str, dict]]:
    """Every fenced ```yaml block of the README and docs/*.md that looks like a spec: a mapping with a spec field
    (a block that is not YAML at all, such as an example of a YAML error, is not one)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```ya?ml[ \t]*\n(.*?)^```", text, flags=re.M | re.S):
            try:
                data = parse_yaml(match.group(1), page.name)
            except unetgen.SpecError:
                continue
            if isinstance(data, dict) and set(data) & set(unetgen.UNetSpec.model_fields):
                found.append((f"{page.name}:{text.count(chr(10), 0, match.start()) + 1}", data))
    return found


def test_checked_in_schema_is_the_commands_output(capsys):
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert CHECKED_IN.read_text(encoding="utf-8") == printed, "run: unetgen schema -o docs/spec.schema.json"


def test_schema_to_a_file(tmp_path, capsys):
    target = tmp_path / "spec.schema.json"
    target.write_text("old")
    assert main(["schema", "--output", str(target)]) == 0
    assert capsys.readouterr().out == f"wrote {target}\n"
    assert target.read_text(encoding="utf-8") == CHECKED_IN.read_text(encoding="utf-8")
    assert main(["schema", "-o", str(tmp_path / "no" / "such.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetgen: error: ") and "does not exist" in err and len(err.splitlines()) == 1


def test_schema_is_draft_2020_12_and_strict_like_the_model():
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and "$id" not in schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(unetgen.UNetSpec.model_fields)
    assert schema["properties"]["norm"]["enum"] == ["none", "batch", "instance", "group", "layer"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.name)
def test_presets_point_at_the_schema_and_pass_it(path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == MODELINE
    assert (path.parent / MODELINE.split("=", 1)[1]).resolve() == CHECKED_IN
    _validator().validate(parse_yaml(text, path.name))


BLOCKS = _yaml_blocks()


def test_the_docs_have_spec_examples():
    assert len(BLOCKS) >= 2, [where for where, _ in BLOCKS]


@pytest.mark.parametrize(("where", "data"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_doc_examples_agree_with_the_schema(where, data):
    """A spec the model takes passes the schema; one the model refuses for a reason the schema can hold (an unknown
    field, a choice, a type or a bound, not a check between fields) fails it, like the README's bad.yaml."""
    errors = sorted(_validator().iter_errors(data), key=str)
    try:
        unetgen.UNetSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        if any(error["type"] != "value_error" for error in exc.errors()):  # value_error: our cross-field checks
            assert errors, f"{where}: the model refuses it ({exc.error_count()} errors), the schema takes it"
    else:
        assert not errors, f"{where}: {errors[0].message}"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"dept": 5}, "Additional properties are not allowed ('dept' was unexpected)"),
        ({"norm": "batchnorm"}, "'batchnorm' is not one of ['none', 'batch', 'instance', 'group', 'layer']"),
        ({"spatial_dims": 4}, "4 is not one of [1, 2, 3]"),
        ({"upsampling": "bilinear"}, "'bilinear' is not one of ['upsample_conv', 'transpose', 'interpolate']"),
        ({"depth": "5"}, "'5' is not of type 'integer'"),
        ({"width": 0}, "0 is not valid under any of the given schemas"),
        ({"dropout": 1.0}, "1.0 is greater than or equal to the maximum of 1.0"),
        ({"channels": [64, "wide"]}, "[64, 'wide'] is not valid under any of the given schemas"),
    ],
)
def test_invalid_specs_fail_the_schema_and_the_model(data, why):
    messages = [error.message for error in _validator().iter_errors(data)]
    assert why in messages, messages
    with pytest.raises(unetgen.SpecError):
        unetgen.spec_from_dict(data)
