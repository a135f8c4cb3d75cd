"""The one error family for everything a user can get wrong.

Every message says where, what and how to fix it, on one line per problem. The CLI prints the message and exits
with status 2; anything that is not a :class:`UNetGenError` is a bug (exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UNetGenError(Exception):
    """Base class of every error caused by user input (a spec, a size, a file)."""


class SpecError(UNetGenError):
    """A spec (YAML text, a file or a dict) is not a valid U-Net description."""


class SizeError(UNetGenError):
    """An input size the network cannot take."""


class ResourceError(UNetGenError):
    """A network or an input that would need more memory than the limit allows (see ``unetgen.set_memory_limit``)."""


class CheckpointError(UNetGenError):
    """A checkpoint file that cannot be read, or whose weights do not match its spec."""


class ExportError(UNetGenError):
    """An ONNX export that fails its checks (nothing is written), or an ONNX file unetgen cannot read."""


class NotExpressible(UNetGenError):
    """Another library's network that unetgen cannot reproduce exactly (refused by name, never approximated), or a
    unetgen network the other library cannot express."""


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or an empty string.

    Args:
        word: what the user wrote.
        choices: the accepted spellings.

    Returns:
        A suffix ready to append to an error message.
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
