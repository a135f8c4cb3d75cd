"""The spec: what the user writes (a validated pydantic model), how it is loaded from YAML and presets, and its JSON Schema. Never imports torch."""
