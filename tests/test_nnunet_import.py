"""nnU-Net in and out: plans written by nnunetv2's planners import as DNA's networks (parameter counts from DNA,
channels and classes as nnunetv2 counts them) and go back to the very same architecture; checkpoints written by
nnunetv2's trainer import with their weights and compute what nnunetv2's predictor computes; the five commands of
docs/nnunet.md run; whatever cannot be reproduced is refused in one line that names it.

The nnU-Net files are checked in under tests/data/nnunet (see its README: made by nnunetv2 2.8.1 itself), so only
the comparisons made live with DNA need it installed."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import unetgen
from conftest import run_main
from unetgen.cli import main
from unetgen.errors import CheckpointError, UNetGenError
from unetgen.interop.nnunet import (
    NotExpressible,
    architecture_from_spec,
    configuration,
    import_nnunet,
    spec_from_plans,
)

DATA = Path(__file__).resolve().parent / "data" / "nnunet"
PLANS = DATA / "plans"
MODELS = DATA / "Dataset901_SynthAniso"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "nnunet.md"

#: From DNA 0.4.4 itself (nnunetv2's PlansManager, determine_num_input_channels, LabelManager, and the network built
#: from the plans with deep supervision, as its trainer builds it): input channels, output channels, parameters.
DNA_FIGURES = {
    ("Dataset901_SynthAniso", "nnUNetPlans", "2d"): (2, 3, 46326869),
    ("Dataset901_SynthAniso", "nnUNetPlans", "3d_lowres"): (2, 3, 30787663),
    ("Dataset901_SynthAniso", "nnUNetPlans", "3d_fullres"): (2, 3, 30704591),
    ("Dataset901_SynthAniso", "nnUNetPlans", "3d_cascade_fullres"): (4, 3, 30705167),
    ("Dataset901_SynthAniso", "nnUNetResEncUNetMPlans", "2d"): (2, 3, 140019349),
    ("Dataset901_SynthAniso", "nnUNetResEncUNetMPlans", "3d_lowres"): (2, 3, 101941839),
    ("Dataset901_SynthAniso", "nnUNetResEncUNetMPlans", "3d_fullres"): (2, 3, 101858767),
    ("Dataset901_SynthAniso", "nnUNetResEncUNetMPlans", "3d_cascade_fullres"): (4, 3, 101859343),
    ("Dataset902_SynthIsoRegions", "nnUNetPlans", "2d"): (4, 3, 20620943),
    ("Dataset902_SynthIsoRegions", "nnUNetPlans", "3d_fullres"): (4, 3, 31198991),
    ("Dataset902_SynthIsoRegions", "nnUNetResEncUNetMPlans", "2d"): (4, 3, 71818447),
    ("Dataset902_SynthIsoRegions", "nnUNetResEncUNetMPlans", "3d_fullres"): (4, 3, 102353167),
}
CHECKPOINTS = {
    "plain3d": ("nnUNetTrainer__nnUNetPlans__3d_fullres", "3d_fullres"),
    "resenc2d": ("nnUNetTrainer__nnUNetResEncUNetMPlans__2d", "2d"),
}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


run = run_main


@pytest.mark.parametrize("key", list(DNA_FIGURES), ids=["/".join(k) for k in DNA_FIGURES])
def test_planner_plans_import_as_dnas_network_and_go_back_unchanged(key):
    dataset, plans_name, name = key
    plans = _read(PLANS / dataset / f"{plans_name}.json")
    spec = spec_from_plans(plans, name, _read(PLANS / dataset / "dataset.json"))
    plan = unetgen.make_plan(spec)
    channels, classes, parameters = DNA_FIGURES[key]
    assert (spec.in_channels, spec.out_channels, plan.parameters) == (channels, classes, parameters)
    assert list(plan.input_size) == configuration(plans, name, "plans")["patch_size"]
    assert architecture_from_spec(spec) == configuration(plans, name, "plans")["architecture"]


def test_the_parameter_figures_are_dnas():
    """The pinned figures above, recomputed with DNA and nnunetv2 (on the meta device: no memory, no time)."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic_network_architectures is not installed")
    import pydoc

    for (dataset, plans_name, name), (channels, classes, parameters) in DNA_FIGURES.items():
        config = configuration(_read(PLANS / dataset / f"{plans_name}.json"), name, "plans")
        arch = config["architecture"]
        kwargs = dict(arch["arch_kwargs"])
        for key in arch["_kw_requires_import"]:
            kwargs[key] = pydoc.locate(kwargs[key]) if kwargs[key] is not None else None
        with torch.device("meta"):
            network = pydoc.locate(arch["network_class_name"])(
                input_channels=channels, num_classes=classes, deep_supervision=True, **kwargs
            )
        assert sum(p.numel() for p in network.parameters()) == parameters, (dataset, plans_name, name)


def _old_format(config: dict) -> dict:
    """A configuration as nnunetv2 2.0–2.2 wrote it: flat keys instead of the architecture section."""
    arch = config.pop("architecture")
    kwargs = arch["arch_kwargs"]
    features = kwargs["features_per_stage"]
    config.update(
        UNet_class_name=arch["network_class_name"].rpartition(".")[2],
        UNet_base_num_features=features[0],
        unet_max_num_features=max(features),
        n_conv_per_stage_encoder=kwargs.get("n_conv_per_stage", kwargs.get("n_blocks_per_stage")),
        n_conv_per_stage_decoder=kwargs["n_conv_per_stage_decoder"],
        pool_op_kernel_sizes=kwargs["strides"],
        conv_kernel_sizes=kwargs["kernel_sizes"],
        num_pool_per_axis=[sum(s[axis] > 1 for s in kwargs["strides"]) for axis in range(len(kwargs["strides"][0]))],
    )
    return config


@pytest.mark.parametrize("plans_name", ["nnUNetPlans", "nnUNetResEncUNetMPlans"])
def test_old_plan_keys_import_as_the_architecture_section(plans_name):
    plans = _read(PLANS / "Dataset901_SynthAniso" / f"{plans_name}.json")
    dataset = _read(PLANS / "Dataset901_SynthAniso" / "dataset.json")
    old = copy.deepcopy(plans)
    old["configurations"]["3d_fullres"] = _old_format(old["configurations"]["3d_fullres"])
    assert "architecture" not in old["configurations"]["3d_fullres"]
    # the cascade inherits from 3d_fullres: its old keys too
    for name in ("3d_fullres", "3d_cascade_fullres"):
        assert spec_from_plans(old, name, dataset) == spec_from_plans(plans, name, dataset)


@pytest.mark.parametrize("model", list(CHECKPOINTS))
def test_a_trained_checkpoint_computes_what_nnunets_predictor_computes(model, tmp_path, capsys):
    folder, name = CHECKPOINTS[model]
    source = MODELS / folder
    status, out, err = run(["import", "nnunet", str(source / "plans.json"), "-c", name, "--checkpoint",
                            str(source / "fold_0" / "checkpoint_final.pth"), "--out", str(tmp_path)], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1] == f"wrote {tmp_path / f'{name}.yaml'}"
    assert lines[2].startswith(f"wrote {tmp_path / f'{name}.pt'} (") and "nnUNetTrainer, fold 0, epoch 2" in lines[2]
    spec = unetgen.load_spec(tmp_path / f"{name}.yaml")
    network = unetgen.load(tmp_path / f"{name}.pt").eval()
    assert network.spec == spec
    expected = np.load(source / "expected.npz")
    with torch.no_grad():
        ours = network(torch.from_numpy(expected["input"])).numpy()
    theirs = expected["output"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def _doc_commands() -> list[list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"## From nnU-Net to ONNX in five commands\n.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    return [shlex.split(re.sub(r"\s+#.*$", "", line)) for line in block.strip().splitlines()]


def test_the_five_commands_of_the_docs_take_an_nnunet_model_to_onnx_and_predict(tmp_path, monkeypatch, capsys):
    commands = _doc_commands()
    assert len(commands) == 5 and all(argv[0] == "unetgen" for argv in commands)
    folder = "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(MODELS / folder, tmp_path / folder)
    expected = np.load(MODELS / folder / "expected.npz")
    np.save(tmp_path / "case.npy", expected["input"][0])
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        status, out, err = run(argv[1:], capsys)
        assert status == 0, f"{shlex.join(argv)}: {err}"
    labels = np.load(tmp_path / "mask.npy")
    logits = expected["output"][0]
    assert labels.shape == logits.shape[1:]
    ordered = np.sort(logits, axis=0)
    decided = ordered[-1] - ordered[-2] > 1e-4  # pixels where float rounding cannot change the arg-max
    assert decided.mean() > 0.99
    assert np.array_equal(labels[decided], logits.argmax(axis=0)[decided])


def test_the_docs_show_the_spec_the_import_writes(tmp_path):
    """docs/nnunet.md's yaml block is what the import of its plans.json writes."""
    text = DOCS.read_text(encoding="utf-8")
    shown = re.search(r"The spec it writes:\n\n```yaml\n(.*?)```", text, flags=re.S).group(1)
    for name in ("plans.json", "dataset.json"):
        block = re.search(rf"`{re.escape(name)}`:\n\n```text\n(.*?)```", text, flags=re.S).group(1)
        (tmp_path / name).write_text(block, encoding="utf-8")
    assert main(["import", "nnunet", str(tmp_path / "plans.json"), "-c", "3d_fullres", "--dataset-json",
                 str(tmp_path / "dataset.json"), "--out", str(tmp_path / "imported.yaml")]) == 0
    written = (tmp_path / "imported.yaml").read_text(encoding="utf-8")
    assert written.split("\n", 1)[1] == shown  # after its first line, a comment naming the source
    # the shortened plans are the planner's own 3d_fullres
    real = _read(PLANS / "Dataset901_SynthAniso" / "nnUNetPlans.json")
    assert unetgen.load_spec(tmp_path / "imported.yaml") == spec_from_plans(
        real, "3d_fullres", _read(PLANS / "Dataset901_SynthAniso" / "dataset.json"))


# --- refusals ------------------------------------------------------------------------------------------------------


def _plain() -> dict:
    return _read(PLANS / "Dataset901_SynthAniso" / "nnUNetPlans.json")


def _resenc() -> dict:
    return _read(PLANS / "Dataset901_SynthAniso" / "nnUNetResEncUNetMPlans.json")


def _edit(plans: dict, **changes) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(changes)
    return plans


def _imported(plans: dict, key: str) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["_kw_requires_import"].append(key)
    return plans


def _class(plans: dict, name: str) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = name
    return plans


REFUSED = {
    "another class": (lambda: _class(_plain(), "dynamic_network_architectures.architectures.unet.ResidualUNet"),
                      "network_class_name: 'dynamic_network_architectures.architectures.unet.ResidualUNet'"),
    "dropout": (lambda: _edit(_plain(), dropout_op="torch.nn.Dropout3d", dropout_op_kwargs={"p": 0.2}),
                "dropout_op: 'torch.nn.Dropout3d'"),
    "nonlin_first": (lambda: _edit(_plain(), nonlin_first=True), "nonlin_first: true"),
    "uneven conv counts": (lambda: _edit(_plain(), n_conv_per_stage=[2, 2, 3, 2, 2, 2]),
                           "n_conv_per_stage: [2, 2, 3, 2, 2, 2]"),
    "uneven decoder counts": (lambda: _edit(_plain(), n_conv_per_stage_decoder=[2, 2, 1, 2, 2]),
                              "n_conv_per_stage_decoder: [2, 2, 1, 2, 2]"),
    "stem_channels": (lambda: _edit(_resenc(), stem_channels=16), "stem_channels: 16"),
    "BottleneckD": (lambda: _imported(_edit(_resenc(), block="dynamic_network_architectures.building_blocks.residual."
                                                             "BottleneckD"), "block"),
                    "block: 'dynamic_network_architectures.building_blocks.residual.BottleneckD'"),
    "bottleneck_channels": (lambda: _edit(_resenc(), bottleneck_channels=[8] * 6), "bottleneck_channels"),
    "unknown keyword": (lambda: _edit(_plain(), squeeze_excitation=True), "arch_kwargs.squeeze_excitation"),
    "group norm": (lambda: _edit(_plain(), norm_op="torch.nn.GroupNorm"), "norm_op: 'torch.nn.GroupNorm'"),
    "norm eps": (lambda: _edit(_plain(), norm_op_kwargs={"eps": 1e-3, "affine": True}), "norm_op_kwargs.eps: 0.001"),
    "norm not affine": (lambda: _edit(_plain(), norm_op_kwargs={"eps": 1e-5}), "norm_op_kwargs.affine: false"),
    "prelu": (lambda: _edit(_plain(), nonlin="torch.nn.PReLU"), "nonlin: 'torch.nn.PReLU'"),
    "no activation": (lambda: _edit(_plain(), nonlin=None), "nonlin: null"),
    "first stride": (lambda: _edit(_plain(), strides=[[2, 2, 2]] * 6), "strides[0]: [2, 2, 2]"),
    "even kernel": (lambda: _edit(_plain(), kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 4 + [[2, 2, 2]]),
                    "kernel_sizes[5]: [2, 2, 2]"),
}


def _without_import(plans: dict) -> dict:
    plans["configurations"]["3d_fullres"]["architecture"]["_kw_requires_import"] = ["norm_op", "dropout_op", "nonlin"]
    return plans


REFUSED["class named as text, not imported"] = (lambda: _without_import(_plain()), "arch_kwargs.conv_op names a class")


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_unetgen_cannot_reproduce_is_refused_by_name(case, tmp_path, capsys):
    make, named = REFUSED[case]
    plans = make()
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    shutil.copy(PLANS / "Dataset901_SynthAniso" / "dataset.json", tmp_path)
    status, out, err = run(["import", "nnunet", str(tmp_path / "plans.json"), "-c", "3d_fullres", "--dataset-json",
                            str(tmp_path / "dataset.json"), "--out", str(tmp_path / "out.yaml")], capsys)
    assert status == 2 and not out
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"unetgen: error: {tmp_path / 'plans.json'}: 3d_fullres: ") and named in err, err
    assert not (tmp_path / "out.yaml").exists()


def test_files_and_arguments_that_are_wrong_are_refused_in_one_line(tmp_path, capsys):
    plans = str(PLANS / "Dataset901_SynthAniso" / "nnUNetPlans.json")
    dataset = str(PLANS / "Dataset901_SynthAniso" / "dataset.json")
    model = MODELS / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    checkpoint = str(model / "fold_0" / "checkpoint_final.pth")
    out = str(tmp_path / "x.yaml")
    cases = [
        (["-c", "3d_fulres", "--dataset-json", dataset], "no configuration '3d_fulres'; the plans have 2d, "
         "3d_lowres, 3d_fullres, 3d_cascade_fullres (did you mean '3d_fullres'?)"),
        (["-c", "3d_fullres"], "the plans do not say the input channels and classes; give --dataset-json"),
        (["-c", "2d", "--checkpoint", checkpoint], "trained as configuration '3d_fullres', not '2d'"),
        (["-c", "3d_fullres", "--checkpoint", checkpoint], "trained with another architecture than"),
        (["-c", "3d_fullres", "--checkpoint", plans], "not a readable nnU-Net checkpoint"),
        (["-c", "3d_fullres", "--dataset-json", str(tmp_path / "nope.json")],
         "no such file (the nnU-Net dataset.json)"),
    ]
    for extra, message in cases:
        status, printed, err = run(["import", "nnunet", plans, *extra, "--out", out], capsys)
        assert status == 2 and len(err.splitlines()) == 1 and message in err, (extra, err)
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_that_does_not_fit_its_spec_names_the_weights(tmp_path):
    from unetgen.interop.nnunet import load_nnunet_weights, read_checkpoint

    model = MODELS / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    imported = import_nnunet(model / "plans.json", "3d_fullres", checkpoint=model / "fold_0" / "checkpoint_final.pth")
    weights = read_checkpoint(model / "fold_0" / "checkpoint_final.pth")["network_weights"]
    network = unetgen.build(imported.spec)
    broken = dict(weights)
    del broken["decoder.transpconvs.0.weight"]
    with pytest.raises(CheckpointError, match=r"missing decoder\.transpconvs\.0\.weight"):
        load_nnunet_weights(network, broken, where="ckpt")
    broken = dict(weights, **{"decoder.stages.0.convs.0.conv.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"decoder\.stages\.0\.convs\.0\.conv\.bias has shape \(3,\)"):
        load_nnunet_weights(network, broken, where="ckpt")
    broken = dict(weights, **{"encoder.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected encoder\.extra\.weight"):
        load_nnunet_weights(network, broken, where="ckpt")


REFUSED_OUT = {
    "padding: valid": dict(padding="valid", downsampling="conv", pool_sizes=[3, 3, 3], kernel_size=3),
    "downsampling: maxpool": dict(downsampling="maxpool"),
    "downsampling: avgpool": dict(downsampling="avgpool"),
    "upsampling: upsample_conv": dict(upsampling="upsample_conv"),
    "output: same": dict(output="same", deep_supervision=0),
    "dropout": dict(dropout=0.5, dropout_at="bottleneck"),
    "final_activation": dict(final_activation="softmax"),
    "block: residual": dict(block="residual", downsampling="maxpool"),
    "up_channels: keep": dict(up_channels="keep"),
    "up_bias: false with conv_bias: true": dict(up_bias=False),
    "padding_mode: reflect": dict(padding_mode="reflect"),
    "norm: group": dict(norm="group", norm_groups=2),
    "activation: prelu": dict(activation="prelu"),
    "channels: encoder.1's convolutions have widths 8/16": dict(width=None, channels=[4, [8, 16], 16, 32]),
}


@pytest.mark.parametrize("named", list(REFUSED_OUT))
def test_what_nnunet_cannot_express_is_refused_by_name(named):
    base = dict(name="net", depth=4, width=4, padding="same", downsampling="conv", norm="instance", conv_bias=True,
                activation="leaky_relu", deep_supervision=2)
    spec = unetgen.UNetSpec(**{**base, **REFUSED_OUT[named]})
    with pytest.raises(NotExpressible) as refused:
        architecture_from_spec(spec)
    message = str(refused.value)
    assert message.startswith(f"net: {named}") and len(message.splitlines()) == 1, message
    assert isinstance(refused.value, UNetGenError)
