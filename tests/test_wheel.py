"""An installed wheel (not the checkout) loads the presets by name and builds the paper's network: the presets live
in the repository's top-level ``presets/`` folder and install as the package data of ``unetgen.presets``."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_presets_load_from_an_installed_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("unetgen-*.whl")
    # A fresh environment outside the checkout; the dependencies (torch, pydantic, ...) come from this one.
    env = tmp_path / "env"
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr
    code = (
        "import unetgen, pathlib\n"
        "assert pathlib.Path(unetgen.__file__).is_relative_to(pathlib.Path(r'%s')), unetgen.__file__\n"
        "print(' '.join(unetgen.preset_names()))\n"
        "print(unetgen.make_plan(unetgen.preset('paper')).parameters)\n" % env
    )
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names, parameters = run.stdout.split("\n")[:2]
    assert names.split() == sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
    assert int(parameters) == 31_030_658  # Ronneberger et al. 2015
    cli = subprocess.run([str(env / "bin" / "unetgen"), "build", "cicek3d"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert cli.returncode == 0 and "19,069,955" in cli.stdout, cli.stderr
