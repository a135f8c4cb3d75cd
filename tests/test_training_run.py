"""``unetgen train`` end to end on a small synthetic data set: the files a run writes and that predict and export
read, the one-line refusals of bad input before any training, ``--resume`` bit for bit, Ctrl-C, and the variants
(3D, same-output with batch norm, deep supervision, bf16 and fp16, percentile intensities, one output channel, nested
skips, attention gates)."""

from __future__ import annotations

import csv
import json
import os
import signal
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unetgen
from conftest import run_main
from unetgen.training import loop
from unetgen.training.config import TrainConfig
from unetgen.training.loop import train
from unetgen.training.synthetic import write_cells

SMALL = "name: small\ndepth: 3\nwidth: 8\ndropout: 0.5\ndropout_at: bottleneck\ninit: paper\n"


@pytest.fixture(autouse=True)
def one_thread_and_the_default_memory_limit(one_thread):
    yield
    unetgen.set_memory_limit(None)


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_cells(folder / "cells", count=5, size=(64, 64), seed=0)
    (folder / "small.yaml").write_text(SMALL)
    return folder


run_cli = run_main


def base(cells: Path, out: str) -> list[str]:
    return ["train", str(cells / "small.yaml"), "--images", str(cells / "cells/images"), "--masks",
            str(cells / "cells/masks"), "--out", out]


def test_train_then_predict_and_export(cells, tmp_path, capsys):
    out = str(tmp_path / "run")
    status, printed, err = run_cli(base(cells, out) + ["--epochs", "2", "--val-fraction", "0.4"], capsys)
    assert status == 0, err
    lines = printed.splitlines()
    assert lines[0] == "data: 3 training images (64×64), 2 for validation (--val-fraction 0.4)"
    assert lines[1].startswith("network small: patches 104×104 → 64×64, batch 1; one step about ")
    assert lines[2].startswith("recipe paper: SGD momentum 0.99, lr 0.003; weighted cross-entropy (weight map w0 10, "
                               "σ 5 px); augmentation: elastic deformations, shifts, rotations, grey values; "
                               "intensities: z-score per image and channel; 2 epochs on cpu (fp32)")
    assert lines[3].startswith("epoch 1/2: loss ") and ", validation Dice " in lines[3]
    assert lines[5].startswith(f"wrote {out}/last.pt, {out}/best.pt (best: epoch ")
    run = Path(out)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"loss", "lr", "dice_0", "dice_1", "dice_mean", "iou_0", "iou_1", "seconds", "memory_mib"} <= set(rows[0])
    logged = json.loads((run / "log.json").read_text())
    assert logged["config"]["recipe"] == "paper" and len(logged["epochs"]) == 2
    assert ElementTree.parse(run / "curves.svg").getroot().tag.endswith("svg")
    model = unetgen.load(run / "best.pt")
    assert model.intensity == {"method": "zscore"}
    # the checkpoints are what predict and export read
    image = cells / "cells/images/cells_000.png"
    status, printed, err = run_cli(["predict", "--weights", f"{out}/best.pt", "--input", str(image), "--output",
                                    str(tmp_path / "mask.png")], capsys)
    assert status == 0, err
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (64, 64)
    status, printed, err = run_cli(["export", "--weights", f"{out}/last.pt", "--onnx", str(tmp_path / "m.onnx"),
                                    "--input-size", "104", "104"], capsys)
    assert status == 0, err
    assert unetgen.read_onnx_info(tmp_path / "m.onnx").intensity == {"method": "zscore"}


def bad_mask(cells: Path, tmp_path: Path) -> list[str]:
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in (cells / "cells/masks").iterdir():
        labels = np.asarray(Image.open(path))
        Image.fromarray((labels * (255 if path.stem == "cells_000" else 1)).astype(np.uint8)).save(masks / path.name)
    return ["--masks", str(masks)]


def one_missing(cells: Path, tmp_path: Path) -> list[str]:
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted((cells / "cells/masks").iterdir())[1:]:
        (masks / path.name).write_bytes(path.read_bytes())
    return ["--masks", str(masks)]


def empty(cells: Path, tmp_path: Path) -> list[str]:
    (tmp_path / "empty").mkdir()
    return ["--images", str(tmp_path / "empty")]


def batch_norm_spec(cells: Path, tmp_path: Path) -> list[str]:
    (tmp_path / "bn.yaml").write_text("depth: 3\nwidth: 4\npadding: same\nnorm: batch\noutput: same\n")
    return ["--patch-size", "4"]


@pytest.mark.parametrize("make, words", [
    (empty, "--images {tmp}/empty: no images in it (files ending in .npy, .png, .tif, .tiff, .jpg, .jpeg, .bmp)"),
    (one_missing, "{cells}/cells/images/cells_000.png: no mask of that name in {tmp}/masks (there: cells_001.png, "
     "cells_002.png, cells_003.png, ...)"),
    (bad_mask, "{tmp}/masks/cells_000.png: labels 0, 255; the network has 2 classes (labels 0–1); save it as 0/1"),
    (lambda c, t: ["--patch-size", "101"], "--patch-size 101: input 101×101: height: encoder.1 max-pools an odd size "
     "(97); nearest valid sizes: 100, 104 (valid sizes: 44+4k (44, 48, 52, ...))"),
    (lambda c, t: ["--patch-size", "200"], "--patch-size 200: its output is 160×160, larger than the smallest image "
     "(64 along height); use --patch-size 104 or less"),
    (lambda c, t: ["--epochs", "0"], "--epochs 0: give a whole number from 1 up"),
    (lambda c, t: ["--loss", "dice"], "--loss dice: give one of ce, weighted-ce, ce-dice (did you mean 'ce-dice'?)"),
    (lambda c, t: ["--resume"],
     "{tmp}/run/last.pt: no such file; --resume continues a run whose folder (--out) has one"),
    (batch_norm_spec, "--batch-size 1: bottleneck.convs.norm0 (batch norm) sees one value per channel (a 1×1 map of "
     "1 sample) at patch 4×4, and cannot normalise it; use --batch-size 2 or more, or a larger --patch-size"),
])
def test_bad_input_is_one_line_before_training(cells, tmp_path, capsys, make, words):
    argv = base(cells, str(tmp_path / "run")) + make(cells, tmp_path)
    if make is one_missing:
        argv += ["--images", str(cells / "cells/images")]
    if make is batch_norm_spec:
        argv[1] = str(tmp_path / "bn.yaml")
    status, printed, err = run_cli(argv, capsys)
    assert (status, printed) == (2, "")
    assert err == "unetgen: error: " + words.format(tmp=tmp_path, cells=cells) + "\n"
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_batch_that_cannot_fit_is_refused(cells, tmp_path, capsys):
    unetgen.set_memory_limit("4MiB")
    status, printed, err = run_cli(base(cells, str(tmp_path / "run")) + ["--batch-size", "8"], capsys)
    assert status == 2
    assert err.startswith("unetgen: error: --batch-size 8 --patch-size 104 104: one training step needs about ")
    assert err.endswith("more than the memory limit of 4.0 MiB; use a smaller --batch-size or --patch-size\n")
    assert err.count("\n") == 1


def test_memory_chooses_the_largest_batch_that_fits_its_budget(cells, tmp_path, capsys, monkeypatch):
    from unetgen.planning.budget import budgeted_bytes
    from unetgen.training import checks

    seen = {}
    real = loop.prepare

    def keep(config, world=None):
        seen["setup"] = real(config, world)
        raise KeyboardInterrupt  # the choice is made before training: stop there

    monkeypatch.setattr(loop, "prepare", keep)
    budget = 30 * 2**20
    with pytest.raises(KeyboardInterrupt):
        train(config(cells, tmp_path / "run", batch_size=None, memory="30MiB", patches_per_image=20))
    setup = seen["setup"]
    batch = setup.config.batch_size

    def needs(n: int) -> int:
        return budgeted_bytes(setup.plan, unetgen.estimate(setup.plan, n, training=True, optimizer="sgd",
                                                           precision="fp32", device="cpu"))

    assert 1 < batch < checks.MAX_MEMORY_BATCH and needs(batch) <= budget < needs(batch + 1)
    # never more than the patches a process trains on per epoch
    with pytest.raises(KeyboardInterrupt):
        train(config(cells, tmp_path / "run2", batch_size=None, memory="30GiB", patches_per_image=1))
    assert seen["setup"].config.batch_size == len(seen["setup"].train)
    # a batch asked for is checked against the budget; one that cannot fit is refused in one line, before training
    monkeypatch.setattr(loop, "prepare", real)
    status, printed, err = run_cli(base(cells, str(tmp_path / "run3")) + ["--batch-size", "64", "--memory", "30MiB"],
                                   capsys)
    assert (status, printed) == (2, "") and err.count("\n") == 1
    assert "one training step needs" in err and "more than --memory 30.0 MiB; leave out --batch-size" in err
    status, printed, err = run_cli(base(cells, str(tmp_path / "run4")) + ["--memory", "1MiB"], capsys)
    assert status == 2 and "even a batch of one 104×104 patch needs" in err
    assert not (tmp_path / "run3").exists() and not (tmp_path / "run4").exists()


def config(cells: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(epochs=3, batch_size=2, val_fraction=0.2, patch_size=(64,)) | changes
    return TrainConfig(spec=str(cells / "small.yaml"), images=str(cells / "cells/images"),
                       masks=str(cells / "cells/masks"), out=str(out), **settings)


def saved(path: Path) -> dict:
    payload = torch.load(path, weights_only=True)
    state = payload["training"]
    return {"weights": payload["state_dict"], "optimizer": state["optimizer"]["state"],
            "rows": [{k: v for k, v in row.items() if k not in ("seconds", "memory_mib")}
                     for row in json.loads(state["rows"])]}


def test_resume_continues_exactly_after_a_signal(cells, tmp_path):
    straight = train(config(cells, tmp_path / "a"))
    assert straight.epochs == 3 and not straight.interrupted

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 0):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the second epoch

    stopped = train(config(cells, tmp_path / "b"), after_step=interrupt)
    assert stopped.interrupted and (stopped.epochs, stopped.step) == (1, 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    assert torch.load(tmp_path / "b/last.pt", weights_only=True)["training"]["step"] == 1
    resumed = train(config(cells, tmp_path / "b", resume=True))
    assert resumed.epochs == 3 and not resumed.interrupted
    a, b = saved(tmp_path / "a/last.pt"), saved(tmp_path / "b/last.pt")
    assert a["rows"] == b["rows"]
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), key
    for key, value in a["optimizer"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"][key]["momentum_buffer"])
    # more epochs later: --resume with a larger --epochs continues the same run
    longer = train(config(cells, tmp_path / "b", resume=True, epochs=4))
    assert [row["epoch"] for row in longer.rows] == [1, 2, 3, 4]


def test_seeds_make_runs_reproducible_and_differ_between_seeds(cells, tmp_path):
    first = train(config(cells, tmp_path / "a", epochs=1, seed=5))
    again = train(config(cells, tmp_path / "b", epochs=1, seed=5))
    other = train(config(cells, tmp_path / "c", epochs=1, seed=6))
    assert first.rows[0]["loss"] == again.rows[0]["loss"] != other.rows[0]["loss"]


def test_ctrl_c_in_the_command_saves_and_exits_130(cells, tmp_path, capsys, monkeypatch):
    original = loop._Trainer._train_step

    def step_then_ctrl_c(self, *args):
        loss = original(self, *args)
        os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(loop._Trainer, "_train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    status, printed, err = run_cli(base(cells, str(out)) + ["--epochs", "5"], capsys)
    assert status == 130
    assert err.endswith(f"interrupted at epoch 1, step 1: saved {out}/last.pt; continue with the same command and "
                        "--resume\n")
    monkeypatch.setattr(loop._Trainer, "_train_step", original)
    status, printed, err = run_cli(base(cells, str(out)) + ["--epochs", "1", "--resume"], capsys)
    assert status == 0, err
    assert "resuming" in printed and "epoch 1/1: loss" in printed
    status, printed, err = run_cli(base(cells, str(out)) + ["--lr", "0.5", "--resume"], capsys)
    assert status == 2 and err == (f"unetgen: error: --lr 0.5: the run in {out} was started with 0.003; a resumed run "
                                   "keeps its settings (leave the option out, or start a new run in another folder)\n")


def volumes(folder: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k in range(2):
        labels = np.zeros((20, 24, 24), np.uint8)
        labels[5:15, 6:18, 4 + k : 16 + k] = 1
        np.save(folder / f"images/v{k}.npy", (labels * 2 + rng.normal(size=labels.shape)).astype(np.float32))
        np.save(folder / f"masks/v{k}.npy", labels)
    return str(folder / "images"), str(folder / "masks")


@pytest.mark.parametrize("spec, changes", [
    ("depth: 2\nwidth: 4\nspatial_dims: 3\n", {"patch_size": (24,)}),                          # 3D volumes
    ("depth: 3\nwidth: 4\npadding: same\nnorm: batch\noutput: same\n", {"recipe": "modern"}),  # core of a same net
    ("depth: 3\nwidth: 4\ndeep_supervision: 1\n", {"optimizer": "sgd-poly", "loss": "ce-dice"}),
    ("depth: 3\nwidth: 4\n", {"precision": "bf16", "normalization": "percentile"}),
    ("depth: 3\nwidth: 4\nout_channels: 1\nfinal_activation: sigmoid\n",
     {"loss": "ce-dice", "augment": "none", "precision": "fp16"}),                          # binary, loss scaling
    ("depth: 3\nwidth: 4\nskips: nested\ndeep_supervision: 1\n", {}),                  # UNet++ with its heads
    ("depth: 3\nwidth: 4\nskip_gate: attention\n", {"batch_size": 2}),                 # attention gates
])
def test_variants_train_and_predict(cells, tmp_path, spec, changes):
    (tmp_path / "net.yaml").write_text(spec)
    images, masks = volumes(tmp_path / "vol") if "spatial_dims: 3" in spec else (
        str(cells / "cells/images"), str(cells / "cells/masks"))
    result = train(TrainConfig(spec=str(tmp_path / "net.yaml"), images=images, masks=masks, out=str(tmp_path / "run"),
                               epochs=1, val_fraction=0.5 if "3" in spec else 0.2, **changes))
    assert result.epochs == 1 and np.isfinite(result.rows[0]["loss"])
    model = unetgen.load(result.last)
    if changes.get("normalization") == "percentile":
        assert model.intensity["method"] == "percentile" and len(model.intensity["low"]) == 1
    sample = np.load(Path(images) / "v0.npy") if "spatial_dims: 3" in spec else np.asarray(
        Image.open(cells / "cells/images/cells_000.png"))
    labels = unetgen.predict(model, sample, output="labels")
    assert labels.shape == sample.shape


def test_validation_folders_and_colour_images(cells, tmp_path):
    # RGB images (three channels, 8-bit, channels last as the files store them) with validation from other folders
    for part in ("images", "masks"):
        (tmp_path / part).mkdir()
    for path in sorted((cells / "cells/images").iterdir())[:3]:
        grey = np.asarray(Image.open(path)).astype(np.int32)
        rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "images" / path.name)
        (tmp_path / "masks" / path.name).write_bytes((cells / "cells/masks" / path.name).read_bytes())
    (tmp_path / "rgb.yaml").write_text("depth: 3\nwidth: 4\nin_channels: 3\n")
    result = train(TrainConfig(spec=str(tmp_path / "rgb.yaml"), images=str(tmp_path / "images"),
                               masks=str(tmp_path / "masks"), val_images=str(tmp_path / "images"),
                               val_masks=str(tmp_path / "masks"), out=str(tmp_path / "run"), epochs=1,
                               normalization="percentile"))
    assert {"dice_0", "dice_1", "iou_1"} <= set(result.rows[0])
    intensity = unetgen.load(result.best).intensity
    assert intensity["method"] == "percentile" and len(intensity["mean"]) == 3


@pytest.mark.parametrize("value", ["abc", "0", "1.5.3GiB"])
def test_a_memory_that_is_not_a_size_is_refused_before_anything_is_read(value, tmp_path, capsys):
    status, printed, err = run_cli(["train", "paper", "--images", str(tmp_path / "none"), "--masks",
                                    str(tmp_path / "none"), "--out", str(tmp_path / "run"), "--memory", value], capsys)
    assert (status, printed) == (2, "")
    assert err == f"unetgen: error: --memory {value}: give the memory one training step may take, e.g. 4GiB or 512MiB\n"
