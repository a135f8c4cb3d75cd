"""The spec as a JSON Schema, for editors: completion, hover text and checks while a spec file is typed.

The schema comes from the pydantic model (:class:`~unetgen.spec.fields.UNetSpec`), so it has the model's fields,
types, bounds, choices and descriptions, and refuses unknown fields as the model does. It cannot hold the checks
that involve two fields (``channels`` against ``depth``, odd kernels, ``norm_groups`` dividing every width):
``unetgen build`` is still the final word on a spec.

A YAML file points an editor at it with a first line such as
``# yaml-language-server: $schema=../docs/spec.schema.json`` (the YAML language server, used by VS Code's and
other editors' YAML support).
"""

from __future__ import annotations

import json
from typing import Any

from .fields import UNetSpec

#: The JSON Schema dialect the schema is written in (pydantic writes draft 2020-12).
DIALECT = "https://json-schema.org/draft/2020-12/schema"

TITLE = "unetgen U-Net spec"

DESCRIPTION = (
    "A U-Net, described by its architecture choices; every field is optional and the defaults are the 2015 "
    "U-Net paper's network. Checks that involve two fields (channels against depth, odd kernels, norm_groups "
    "dividing every width) are made by `unetgen build`."
)


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file.

    Returns:
        The schema as JSON-ready data: draft 2020-12, no ``$id`` (a file refers to it by a relative path), and
        ``additionalProperties: false`` like the model's ``extra="forbid"``.
    """
    schema = UNetSpec.model_json_schema()
    # Python docs (reST roles) in the model's docstring mean nothing in an editor's hover text.
    schema.pop("description", None)
    schema.pop("title", None)
    return {"$schema": DIALECT, "title": TITLE, "description": DESCRIPTION, **schema}


def schema_text() -> str:
    """The schema as the text ``unetgen schema`` prints and ``docs/spec.schema.json`` holds: indented JSON, keys
    in the model's order, non-ASCII kept (``×``, ``√``), ending with a newline."""
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"
