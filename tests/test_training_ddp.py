"""``unetgen train`` under torchrun, as docs/training.md runs it: two CPU processes (gloo) share each step's patches,
DistributedDataParallel averages their gradients, and the first process writes the files — the same training as one
process with the two processes' batches together."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unetgen.training.config import TrainConfig
from unetgen.training.loop import train
from unetgen.training.synthetic import write_cells

ROOT = Path(__file__).resolve().parents[1]
SPEC = "name: nodrop\ndepth: 3\nwidth: 8\ninit: paper\n"  # no dropout: its random mask differs between processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")
def test_two_processes_train_as_one_with_their_batches_together(tmp_path):
    write_cells(tmp_path / "cells", count=4, size=(64, 64), seed=1)
    (tmp_path / "net.yaml").write_text(SPEC)
    page = (ROOT / "docs/training.md").read_text(encoding="utf-8")
    shown = shlex.split(next(line for line in page.splitlines() if line.startswith("torchrun --nproc-per-node 2")))
    # the page's command, with this test's files (a network without dropout, whose masks differ between processes)
    where = {"small.yaml": str(tmp_path / "net.yaml"), "cells/images": str(tmp_path / "cells/images"),
             "cells/masks": str(tmp_path / "cells/masks"), "run": str(tmp_path / "ddp")}
    argv = [where.get(word, word) for word in shown[1:]]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, "-m", "torch.distributed.run", "--master-addr", "127.0.0.1", "--master-port",
               str(free_port()), *argv, "--epochs", "2", "--patch-size", "84", "--val-fraction", "0.25"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("epoch 1/2: loss") == 1  # one process prints and writes
    assert "batch 1 × 2 processes" in run.stdout
    files = sorted(path.name for path in (tmp_path / "ddp").iterdir())
    assert files == ["best.pt", "curves.svg", "last.pt", "log.csv", "log.json"]  # no stray temporary files
    # one process, batch 2: each step takes the two patches the two processes took
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = train(TrainConfig(spec=str(tmp_path / "net.yaml"), images=str(tmp_path / "cells/images"),
                                  masks=str(tmp_path / "cells/masks"), out=str(tmp_path / "one"), epochs=2,
                                  batch_size=2, patch_size=(84,), val_fraction=0.25))
    finally:
        torch.set_num_threads(threads)
    together = json.loads((tmp_path / "ddp/log.json").read_text())["epochs"]
    for mine, theirs in zip(alone.rows, together):
        assert theirs["loss"] == pytest.approx(mine["loss"], rel=1e-5)
    a = torch.load(tmp_path / "ddp/last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "one/last.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert torch.load(Path(tmp_path / "ddp/last.pt"), weights_only=True)["training"]["world"] == 2
