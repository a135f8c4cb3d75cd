"""`unetgen draw`: the paper's Figure 1 for any variant: valid SVG, the plan's numbers, PNG through resvg, the layout
as a real browser renders it."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image, ImageChops

import unetgen
from unetgen.drawing import png
from unetgen.cli import main
from unetgen.drawing.draw import draw, svg_size

ROOT = Path(__file__).resolve().parents[1]
SVG_NS = "{http://www.w3.org/2000/svg}"

# Figure 1 of Ronneberger et al. 2015: every feature map's size, top level first (encoder, then decoder), and
# the channel counts written above the bars.
PAPER_SIZES = [572, 570, 568, 284, 282, 280, 140, 138, 136, 68, 66, 64, 32, 30, 28,
               56, 54, 52, 104, 102, 100, 200, 198, 196, 392, 390, 388]
PAPER_CHANNELS = [1, 64, 128, 256, 512, 1024, 2]

PAPER = unetgen.preset("paper")
VARIANTS = {
    "paper": PAPER,
    "paper-upsample-conv": PAPER.replace(upsampling="upsample_conv"),
    "1d-depth3": unetgen.UNetSpec(spatial_dims=1, depth=3, width=8),
    "1d-same": unetgen.UNetSpec(spatial_dims=1, depth=4, width=8, padding="same", output="same", input_size=[99]),
    "3d-depth3": unetgen.UNetSpec(spatial_dims=3, depth=3, width=8, norm="batch"),
    "depth1": unetgen.UNetSpec(depth=1, width=8),
    "depth7": PAPER.replace(depth=7, width=16, input_size=None),
    "depth12-same": unetgen.UNetSpec(depth=12, width=4, padding="same", input_size=[4096, 4096]),
    "same-padding": PAPER.replace(padding="same", input_size=[256, 256]),
    "output-same-odd": PAPER.replace(depth=3, padding="same", output="same", norm="batch", input_size=[101, 77],
                                     upsampling="upsample_conv", interpolation="linear", padding_mode="reflect"),
    "valid-output-same": PAPER.replace(depth=4, output="same", input_size=[300, 200]),
    "wide-last-level": unetgen.UNetSpec(depth=4, channels=[16, 64, 256, 65536], padding="same",
                                        input_size=[128, 128]),
    "residual-dropout-softmax": unetgen.UNetSpec(depth=3, width=8, block="residual", dropout=0.2,
                                                 dropout_at="every_level", final_activation="softmax",
                                                 activation="leaky_relu"),
    **{name: unetgen.preset(name) for name in unetgen.preset_names() if name != "paper"},
}


def _fmt(size) -> str:
    return "×".join(str(s) for s in size)


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(node.itertext()) for node in root.iter(f"{SVG_NS}text")]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_valid_svg_with_every_shape_of_the_plan(name):
    spec = VARIANTS[name]
    svg = draw(spec)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == f"{SVG_NS}svg"
    width, height = svg_size(svg)
    assert root.get("viewBox") == f"0 0 {width} {height}"
    # every bar lies inside the picture
    bars = [r for r in root.iter(f"{SVG_NS}rect") if (r.get("class") or "").startswith("bar")]
    assert bars
    for rect in bars:
        x, y, w, h = (float(rect.get(a)) for a in ("x", "y", "width", "height"))
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height and w > 0 and h > 0
    # the plan's sizes and channels are written on the figure
    texts = _texts(svg)
    plan = unetgen.make_plan(spec)
    for block in plan.blocks:
        assert _fmt(block.shape[1:]) in texts, (block.name, block.shape)
        if block.name.endswith(".convs") or block.name in ("head",) or block.name.startswith(("encoder", "bottleneck")):
            assert str(block.shape[0]) in texts, (block.name, block.shape)
    nested = any(block.name.startswith("nested.") for block in plan.blocks)  # UNet++: one box per node instead
    for skip in plan.skips if not nested else ():  # the concatenation's channels above each copied map
        concat = plan.block(f"decoder.{skip.level}.crop").shape[0] + plan.block(f"decoder.{skip.level}.up").shape[0]
        assert str(concat) in texts
        assert (f"crop {skip.crop[0]} per side" in texts) == any(skip.crop)
    # the options are visible
    summary = " ".join(texts)
    for words in (f"depth {spec.depth}", f"padding {spec.padding}", f"norm {spec.norm}", f"output {spec.output}"):
        assert words in summary
    assert f"{plan.parameters:,} parameters" in summary


def test_paper_numbers():
    texts = _texts(draw("paper"))
    sizes = [int(t.split("×")[0]) for t in texts if re.fullmatch(r"\d+×\d+", t)]
    assert sorted(sizes) == sorted(PAPER_SIZES + [388])  # and the head's output
    for channels in PAPER_CHANNELS:
        assert str(channels) in texts
    assert [t for t in texts if t.startswith("crop ")] == [
        "crop 88 per side", "crop 40 per side", "crop 16 per side", "crop 4 per side"
    ]
    assert "input 1×572×572 → output 2×388×388 · 23 conv layers · 31,030,658 parameters" in texts
    for legend in ("conv 3×3 valid, ReLU", "copy and crop (centre)", "max pool 2×2", "up-conv 2×2, transposed",
                   "conv 1×1"):
        assert legend in texts


def test_options_change_the_picture():
    legend = set(_texts(draw(VARIANTS["output-same-odd"])))
    assert {"mirror padding (reflect)", "crop to the input's size", "copy", "up-sample (bilinear), conv 2×2",
            "conv 3×3 same (reflect), batch norm, ReLU", "mirror 1+2", "crop 1+2", "101×77"} <= legend
    assert "conv 3×3×3 valid, batch norm, ReLU" in _texts(draw(VARIANTS["3d-depth3"]))
    texts = _texts(draw("nnunet"))
    assert "conv 3×3×3 (level 0: 1×3×3) same (zeros), instance norm, leaky ReLU 0.01" in texts
    assert "max pool 2×2×2 (level 0: 1×2×2)" in texts
    texts = _texts(draw(VARIANTS["residual-dropout-softmax"]))
    assert "output (softmax)" in texts
    assert any("residual blocks · dropout 0.2 (every level) · final softmax" in t for t in texts)


def test_plan_and_input_size():
    plan = unetgen.make_plan(PAPER, (588, 572))
    svg = draw(plan)
    assert svg == draw(PAPER, [588, 572]) == draw("paper", (588, 572)) == draw(unetgen.make_plan(PAPER), (588, 572))
    assert "404×388" in _texts(svg)
    with pytest.raises(unetgen.SizeError, match="max-pools an odd size"):
        draw(PAPER, [571, 572])
    with pytest.raises(unetgen.SpecError, match="no such file or preset"):
        draw("papr")


def test_user_text_is_escaped():
    name = 'a<b>&"c" \x01'
    spec = PAPER.replace(name=name, description="</text><script>alert(1)</script> & more")
    svg = draw(spec)
    texts = _texts(svg)
    assert 'a<b>&"c" ' in texts
    assert "</text><script>alert(1)</script> & more" in texts
    assert "<script>" not in svg
    assert ET.fromstring(svg).find(f"{SVG_NS}title").text.startswith('U-Net diagram of a<b>&"c"')
    long = PAPER.replace(description="word " * 400)
    assert svg_size(draw(long))[0] < 1400  # a long description is shortened, not a mile-wide picture


def test_bars_scale_for_wide_and_deep_networks():
    width, _ = svg_size(draw(VARIANTS["wide-last-level"]))
    assert width < 1200
    root = ET.fromstring(draw(VARIANTS["wide-last-level"]))
    widths = [float(r.get("width")) for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "bar map"]
    assert max(widths) < 60
    for name in ("depth7", "depth12-same"):
        root = ET.fromstring(draw(VARIANTS[name]))
        heights = [float(r.get("height")) for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "bar map"]
        assert min(heights) >= 40  # the bottom levels stay readable
    assert svg_size(draw("paper"))[0] < 1200  # the paper's network fits a page


def test_committed_picture_is_current():
    assert (ROOT / "docs" / "paper.svg").read_text(encoding="utf-8") == draw("paper")
    assert "(docs/paper.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")  # the front page shows it
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert any("unetgen draw paper -o docs/paper.svg" in page.read_text(encoding="utf-8") for page in pages), (
        "say in the docs how docs/paper.svg is made"
    )


# --- the command ------------------------------------------------------------------------------------------------


def test_cli_writes_svg(tmp_path, capsys):
    target = tmp_path / "u.svg"
    assert main(["draw", "paper", "-o", str(target)]) == 0
    width, height = svg_size(draw("paper"))
    assert capsys.readouterr().out == f"wrote {target} ({width}×{height} pixels)\n"
    assert target.read_text(encoding="utf-8") == draw("paper")
    assert main(["draw", "cicek3d", "-o", str(target)]) == 0  # replaced
    assert "132×132×116" in _texts(target.read_text(encoding="utf-8"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.svg"]


def test_cli_default_file_and_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["draw"]) == 0
    assert (tmp_path / "unet.svg").read_text(encoding="utf-8") == draw("paper")
    capsys.readouterr()
    assert main(["draw", "paper", "-o", "-", "--input-size", "588", "572"]) == 0
    assert capsys.readouterr().out == draw("paper", [588, 572])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["draw", "papr"], "unetgen: error: papr: no such file or preset; presets: "),
        (["draw", "paper", "--input-size", "571", "572"], "unetgen: error: input 571×572: height: encoder.1 max-"),
        (["draw", "paper", "--input-size", "572"], "unetgen: error: input 572: gives 1 size for a 2D network"),
        (["draw", "paper", "-o", "u.jpg"], "unetgen: error: u.jpg: unknown image type '.jpg'; give a file ending in"),
        (["draw", "paper", "-o", "no/such/u.svg"], "unetgen: error: no/such/u.svg: folder no/such does not exist"),
        (["draw", "paper", "-o", "-", "--png"], "unetgen: error: --png: cannot write a PNG to standard output"),
    ],
)
def test_cli_user_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_spec_file(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("dept: 5\n")
    assert main(["draw", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "u.svg")]) == 2
    assert "bad.yaml: dept: unknown field (did you mean 'depth'?)" in capsys.readouterr().err
    assert not (tmp_path / "u.svg").exists()


def test_cli_png_without_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(png, "resvg_py", None)  # as without `pip install 'unetgen[png]'`
    assert not png.available()
    assert main(["draw", "paper", "-o", str(tmp_path / "u.svg"), "--png"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"unetgen: error: {tmp_path / 'u.png'}: writing PNG needs the png extra: pip install 'unetgen[png]'; "
        "or write an SVG instead (-o unet.svg)\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the SVG
    assert main(["draw", "paper", "-o", str(tmp_path / "u.png")]) == 2
    assert list(tmp_path.iterdir()) == []


needs_resvg = pytest.mark.skipif(not png.available(), reason="the png extra is not installed: pip install -e '.[png]'")


@needs_resvg
def test_png_with_resvg(tmp_path, capsys):
    assert main(["draw", "paper", "-o", str(tmp_path / "u.svg"), "--png"]) == 0
    data = (tmp_path / "u.png").read_bytes()
    width, height = svg_size((tmp_path / "u.svg").read_text(encoding="utf-8"))
    assert png.png_size(data) == (2 * width, 2 * height)
    assert Image.open(io.BytesIO(data)).size == (2 * width, 2 * height)
    out = capsys.readouterr().out
    assert out == (
        f"wrote {tmp_path / 'u.svg'} ({width}×{height} pixels)\n"
        f"wrote {tmp_path / 'u.png'} ({2 * width}×{2 * height} pixels)\n"
    )
    assert main(["draw", "cicek3d", "-o", str(tmp_path / "c.png")]) == 0
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["c.png", "u.png", "u.svg"]  # a .png alone: no SVG


@needs_resvg
def test_png_draws_the_text():
    """Text needs a system font: without one resvg leaves the labels out silently (.ci/run installs Debian's
    fonts-liberation, whose Liberation Sans has the Helvetica/Arial widths the layout is made for)."""
    svg = draw(VARIANTS["depth1"])
    without_text = re.sub(r"<text\b.*?</text>", "", svg, flags=re.S)
    images = [Image.open(io.BytesIO(png.svg_to_png(s, scale=1))).convert("L") for s in (svg, without_text)]
    box = ImageChops.difference(*images).getbbox()
    assert box is not None, "no text in the PNG: no font found; install one (apt-get install fonts-liberation)"
    assert box[2] - box[0] > svg_size(svg)[0] / 3  # the title and the labels, across the picture


# --- in a real browser: the layout as a user sees it --------------------------------------------------------------

#: Browser commands tried in this order (Debian's package is ``chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium-family browser on PATH (.ci/run installs Debian's chromium; apt-get install chromium)",
)
#: Headless, offline, no state left behind; --no-sandbox because CI containers run as root.
HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)

# Runs in the page: for every SVG, every text as the browser laid it out, and every bar and arrow.
_MEASURE = """
const report = [...document.querySelectorAll('svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const rel = r => [r.left - box.left, r.top - box.top, r.right - box.left, r.bottom - box.top];
  return {
    width: box.width, height: box.height,
    texts: [...svg.querySelectorAll('text')].map(t => ({text: t.textContent, length: t.getComputedTextLength(),
                                                        box: rel(t.getBoundingClientRect())})),
    shapes: [...svg.querySelectorAll('rect.bar, line.arrow')].map(s => rel(s.getBoundingClientRect())),
  };
});
const out = document.createElement('pre');
out.id = 'rendered';
out.textContent = JSON.stringify(report);
document.body.appendChild(out);
"""


def _render(svgs: list[str], tmp_path: Path) -> tuple[str, list[dict]]:
    """Open the SVGs inline in a headless Chromium; return the page's visible text and the measured layout."""
    page = tmp_path / "page.html"
    body = "\n".join(f"<div>{svg}</div>" for svg in svgs)
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><style>body{{margin:0}}</style></head>'
        f"<body>{body}<script>{_MEASURE}</script></body></html>",
        encoding="utf-8",
    )
    command = [BROWSER, *HEADLESS_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="rendered">(.*?)</pre>', run.stdout, flags=re.S)
    assert found, run.stdout[-2000:]
    return run.stdout, json.loads(html.unescape(found.group(1)))


def _overlap(a: list[float], b: list[float], slack: float = 0.5) -> bool:
    return a[0] + slack < b[2] and b[0] + slack < a[2] and a[1] + slack < b[3] and b[1] + slack < a[3]


@needs_browser
def test_rendered_in_a_browser(tmp_path):
    names = list(VARIANTS)  # the paper first
    dom, report = _render([draw(VARIANTS[name]) for name in names], tmp_path)
    paper = report[0]
    rendered = [t["text"] for t in paper["texts"] if t["length"] > 0]
    for number in ("572", "388", "64", "1024"):
        assert any(number in text for text in rendered), number
    assert "572×572" in rendered and "388×388" in rendered and "1024" in rendered and "64" in rendered
    for name, layout in zip(names, report):
        assert (layout["width"], layout["height"]) == svg_size(draw(VARIANTS[name])), name
        texts = layout["texts"]
        for text in texts:  # drawn, and inside the picture
            x0, y0, x1, y1 = text["box"]
            assert text["length"] > 0 and x0 >= -0.5 and y0 >= -0.5, (name, text)
            assert x1 <= layout["width"] + 0.5 and y1 <= layout["height"] + 0.5, (name, text)
        # legible: no label covers another label, a bar or an arrow
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                assert not _overlap(a["box"], b["box"]), (name, a["text"], b["text"])
            for shape in layout["shapes"]:
                assert not _overlap(a["box"], shape), (name, a["text"], shape)


def test_notebook_display():
    # what draw() returns shows as the picture in a notebook, and is the SVG text everywhere else
    svg = unetgen.draw(PAPER)
    assert svg._repr_svg_() == svg == draw(PAPER) and isinstance(svg, str)
    plan = unetgen.make_plan(PAPER, (588, 572))
    assert unetgen.draw(plan)._repr_svg_() == draw(plan)


def test_no_torch_needed():
    code = "import sys, unetgen; unetgen.draw('paper'); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_ci_installs_the_png_extra_fonts_and_a_browser():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '".[dev,png' in script and "fonts-liberation" in script and "chromium" in script
    assert max(script.index("fonts-liberation"), script.index("chromium")) < script.index("pytest")
