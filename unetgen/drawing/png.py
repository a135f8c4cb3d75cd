"""SVG text → PNG bytes, through a renderer this machine already has: a headless Chromium, else cairosvg.

Neither is a dependency of unetgen: an SVG is text and needs no renderer; a PNG is an extra for places that do not
show SVG. Without a renderer, :func:`svg_to_png` says which ones it looked for and how to get one.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from .draw import svg_size
from ..errors import UNetGenError

log = logging.getLogger(__name__)

#: Browser commands tried in this order (Debian's package is ``chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

#: Flags for a headless browser that stays offline and leaves no state behind (a fresh profile is added per run).
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

NO_RENDERER = (
    "no PNG renderer found (looked for {browsers} and the Python package cairosvg); install one "
    "(apt-get install chromium, or pip install cairosvg) or write an SVG instead (-o unet.svg)"
)


def find_browser() -> str | None:
    """The path of a Chromium-family browser on ``PATH``, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def headless_command(browser: str, profile: str | Path, *args: str) -> list[str]:
    """The command line that runs ``browser`` headless, offline, with a fresh profile folder.

    Args:
        browser: the browser executable.
        profile: an empty folder for the browser's profile (``--user-data-dir``).
        *args: further flags and the page to open.

    Returns:
        The command, ready for :func:`subprocess.run`.
    """
    return [browser, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]


def renderer() -> str | None:
    """What :func:`svg_to_png` would use: a browser's path, ``"cairosvg"``, or ``None`` when there is none."""
    browser = find_browser()
    if browser:
        return browser
    try:
        importlib.import_module("cairosvg")
    except (ImportError, OSError):  # cairosvg raises OSError when the cairo library itself is missing
        return None
    return "cairosvg"


def svg_to_png(svg: str, scale: int = 2, where: str = "PNG", timeout: float = 120.0) -> bytes:
    """Render an SVG from :func:`unetgen.draw.draw` to PNG.

    Args:
        svg: the SVG text.
        scale: pixels per SVG unit (2 gives a sharp image on high-density screens).
        where: what to call the image in error messages (its file name).
        timeout: seconds to wait for the browser.

    Returns:
        The PNG file's bytes.

    Raises:
        UNetGenError: when there is no renderer, or the renderer fails.
    """
    width, height = svg_size(svg)
    found = renderer()
    if found is None:
        raise UNetGenError(f"{where}: " + NO_RENDERER.format(browsers=", ".join(BROWSERS)))
    if found == "cairosvg":
        cairosvg = importlib.import_module("cairosvg")
        log.info("rendering %s with cairosvg", where)
        return bytes(cairosvg.svg2png(bytestring=svg.encode("utf-8"), scale=scale))
    log.info("rendering %s with %s", where, found)
    with tempfile.TemporaryDirectory(prefix="unetgen-png-") as folder:
        page, shot = Path(folder) / "figure.svg", Path(folder) / "figure.png"
        page.write_text(svg, encoding="utf-8")
        command = headless_command(
            found,
            Path(folder) / "profile",
            f"--window-size={width},{height}",
            f"--force-device-scale-factor={scale}",
            f"--screenshot={shot}",
            page.as_uri(),
        )
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UNetGenError(f"{where}: {found} did not finish within {timeout:g} s; write an SVG instead") from None
        if not shot.is_file() or shot.stat().st_size == 0:
            lines = [line for line in (run.stderr or "").splitlines() if line.strip()]
            detail = lines[-1].strip() if lines else "no message"
            raise UNetGenError(
                f"{where}: {found} could not render the SVG (exit {run.returncode}: {detail}); "
                "try cairosvg (pip install cairosvg) or write an SVG instead"
            )
        return shot.read_bytes()
