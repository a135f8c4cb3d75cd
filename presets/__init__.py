"""The presets shipped with unetgen: one YAML spec a file, loaded by name (``unetgen.preset("paper")``)."""
