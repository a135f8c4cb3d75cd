"""The version of unetgen."""

__version__ = "0.1.0"
