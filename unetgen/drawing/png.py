"""SVG text → PNG bytes, rendered in-process by resvg (the optional ``png`` extra: ``pip install 'unetgen[png]'``).

An SVG is text and needs no renderer; a PNG is for places that do not show SVG. resvg (through the ``resvg-py``
wheel) is a self-contained renderer: no browser, no subprocess, no system library. It draws text with the fonts
installed on the machine; :mod:`unetgen.drawing.draw` lays labels out for Helvetica/Arial metrics, which Liberation
Sans matches (Debian and Ubuntu: ``apt-get install fonts-liberation``). A wider fallback font still renders, a
little more tightly.
"""

from __future__ import annotations

import logging

from ..errors import UNetGenError

try:  # an optional dependency: drawing SVG must work without it
    import resvg_py
except ImportError:  # pragma: no cover - depends on what is installed
    resvg_py = None

log = logging.getLogger(__name__)

#: What to tell a user who asks for a PNG without the extra.
INSTALL_HINT = "pip install 'unetgen[png]'"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def available() -> bool:
    """Whether :func:`svg_to_png` can render here (the ``png`` extra is installed)."""
    return resvg_py is not None


def svg_to_png(svg: str, scale: int = 2, where: str = "PNG") -> bytes:
    """Render an SVG from :func:`unetgen.draw` to PNG.

    Args:
        svg: the SVG text.
        scale: pixels per SVG unit (2 gives a sharp image on high-density screens).
        where: what to call the image in error messages (its file name).

    Returns:
        The PNG file's bytes, ``scale`` times the SVG's width and height.

    Raises:
        UNetGenError: when the ``png`` extra (resvg) is not installed.
    """
    if resvg_py is None:
        raise UNetGenError(
            f"{where}: writing PNG needs the png extra: {INSTALL_HINT}; or write an SVG instead (-o unet.svg)"
        )
    log.info("rendering %s with resvg", where)
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, zoom=scale))


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of PNG file bytes, read from the header.

    Raises:
        ValueError: when ``data`` is not a PNG.
    """
    if data[:8] != _PNG_SIGNATURE or len(data) < 24:
        raise ValueError("not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
