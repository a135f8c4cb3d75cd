"""Regenerate the nnU-Net fixtures of this folder with nnunetv2's own code (not needed at test time).

Run with a Python that has nnunetv2 2.8.1 and dynamic-network-architectures 0.4.4 (see README.md here):

    python tests/data/nnunet/make_fixtures.py

1. ``plans/``: nnunetv2's planners (``ExperimentPlanner`` and ``nnUNetPlannerResEncM``, 8 GB target) run on a
   hand-written dataset fingerprint, no image data: the plans.json and dataset.json they write.
2. ``Dataset901_SynthAniso/<trainer>__<plans>__<configuration>/``: the model folders of tiny networks trained for
   2 epochs by nnunetv2's ``nnUNetTrainer`` on random tensors (CPU), laid out as in ``nnUNet_results`` and written
   by the trainer itself (``plans.json``, ``dataset.json``, ``fold_0/checkpoint_final.pth``). The configuration
   keeps its name (``3d_fullres``, ``2d``) but gets a tiny architecture and patch size in place of the planner's.
   Beside them, ``expected.npz`` (not nnU-Net's): an input and what ``nnUNetPredictor``'s network (deep supervision
   off) computes from it with those weights.

Adapted from the research scripts make_plans.py and make_checkpoint.py (the report on nnU-Net for issue 13).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="nnunet_fixtures_"))
for key, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
    os.environ[key] = str(WORK / sub)  # nnunetv2 reads these when first imported
    (WORK / sub).mkdir()
os.environ["nnUNet_compile"] = "f"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner  # noqa: E402
from nnunetv2.experiment_planning.experiment_planners.residual_unets import (  # noqa: E402
    residual_encoder_unet_planners as resenc_planners,
)
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

#: name, channels, labels, and per case the spacing and shape (z, y, x) of the fingerprint.
DATASETS = {
    # anisotropic CT-like (3 × 0.78 × 0.78 mm), 2 channels, 3 labels: 2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres
    "Dataset901_SynthAniso": dict(
        channel_names={"0": "CT", "1": "noNorm"},
        labels={"background": 0, "organ": 1, "tumor": 2},
        spacings=[[3.0, 0.78, 0.78], [3.0, 0.8, 0.8], [2.5, 0.7, 0.7], [3.0, 0.75, 0.75], [5.0, 0.78, 0.78]],
        shapes=[[100, 512, 512], [120, 512, 512], [90, 480, 480], [110, 512, 512], [60, 512, 512]],
    ),
    # isotropic 1 mm, 4 channels, BraTS-like regions (sigmoid outputs, one per region): 2d and 3d_fullres
    "Dataset902_SynthIsoRegions": dict(
        channel_names={"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        labels={"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
        regions_class_order=[1, 2, 3],
        spacings=[[1.0, 1.0, 1.0]] * 5,
        shapes=[[138, 169, 138], [140, 172, 136], [136, 170, 140], [139, 168, 137], [141, 171, 139]],
    ),
}

#: Tiny networks trained on Dataset901: (plans, configuration, its architecture's changes, patch size).
CHECKPOINTS = [
    ("nnUNetPlans", "3d_fullres", dict(
        n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2],
    ), [8, 16, 16]),
    # the last stage keeps the width: DNA's shortcut there is an average pool alone, no projection
    ("nnUNetResEncUNetMPlans", "2d", dict(
        n_stages=3, features_per_stage=[4, 8, 8], kernel_sizes=[[3, 3], [3, 3], [3, 3]],
        strides=[[1, 1], [2, 2], [2, 2]], n_blocks_per_stage=[1, 2, 2], n_conv_per_stage_decoder=[1, 1],
    ), [16, 16]),
]


def plan(name: str, spec: dict) -> None:
    raw, pre = WORK / "raw" / name, WORK / "preprocessed" / name
    raw.mkdir()
    pre.mkdir()
    count, channels = len(spec["spacings"]), len(spec["channel_names"])
    dataset = {
        "channel_names": spec["channel_names"], "labels": spec["labels"], "numTraining": count,
        "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO",  # no image is ever opened
        "dataset": {f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_{c:04d}.nii.gz" for c in range(channels)],
                                      "label": f"labelsTr/case_{i:03d}.nii.gz"} for i in range(count)},
    }
    if "regions_class_order" in spec:
        dataset["regions_class_order"] = spec["regions_class_order"]
    fingerprint = {
        "spacings": spec["spacings"], "shapes_after_crop": spec["shapes"],
        "foreground_intensity_properties_per_channel": {
            str(c): {"mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 3000.0,
                     "percentile_99_5": 400.0, "percentile_00_5": -100.0} for c in range(channels)},
        "median_relative_size_after_cropping": 1.0,
    }
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint, indent=2))
    for planner in (ExperimentPlanner, resenc_planners.nnUNetPlannerResEncM):
        planner(name).plan_experiment()
    out = HERE / "plans" / name
    out.mkdir(parents=True, exist_ok=True)
    for file in ("nnUNetPlans.json", "nnUNetResEncUNetMPlans.json", "dataset.json"):
        shutil.copy(pre / file, out / file)


def train(plans_name: str, config: str, changes: dict, patch: list[int]) -> None:
    name = "Dataset901_SynthAniso"
    plans = json.loads((HERE / "plans" / name / f"{plans_name}.json").read_text())
    dataset_json = json.loads((HERE / "plans" / name / "dataset.json").read_text())
    plans["configurations"][config]["architecture"]["arch_kwargs"].update(changes)
    plans["configurations"][config]["patch_size"] = patch
    plans["configurations"][config]["batch_size"] = 2
    plans["continue_training"] = False  # nnUNetTrainer.__init__ pops it (run_training.py sets it)
    torch.manual_seed(0)
    np.random.seed(0)
    trainer_module.infer_dataset_class = lambda folder: None  # no preprocessed data: only the data loaders use it
    trainer = nnUNetTrainer(plans=plans, configuration=config, fold=0, dataset_json=dataset_json,
                            device=torch.device("cpu"))
    trainer.num_epochs = 2
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    os.makedirs(trainer.output_folder, exist_ok=True)
    json.dump(trainer.plans_manager.plans, open(os.path.join(trainer.output_folder_base, "plans.json"), "w"), indent=4)
    json.dump(trainer.dataset_json, open(os.path.join(trainer.output_folder_base, "dataset.json"), "w"), indent=4)
    heads = trainer.label_manager.num_segmentation_heads
    scales = trainer._get_deep_supervision_scales()

    def batch() -> dict:
        data = torch.randn(2, trainer.num_input_channels, *patch)
        full = torch.randint(0, heads, (2, 1, *patch)).float()
        targets = [torch.nn.functional.interpolate(full, [round(i * j) for i, j in zip(patch, s)], mode="nearest-exact")
                   for s in scales]
        return {"data": data, "target": targets}

    for _ in range(trainer.num_epochs):
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        trainer.on_train_epoch_end([trainer.train_step(batch()) for _ in range(2)])
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            trainer.on_validation_epoch_end([trainer.validation_step(batch()) for _ in range(2)])
        trainer.on_epoch_end()
    trainer.on_train_end()
    source = Path(trainer.output_folder_base)
    out = HERE / name / source.name
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    for file in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
        shutil.copy(source / file, out / file)
    # what nnU-Net's predictor computes with these weights (its network: deep supervision off)
    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, verbose=False)
    predictor.initialize_from_trained_model_folder(str(source), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    network = predictor.network.eval()
    x = torch.randn(1, trainer.num_input_channels, *patch, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = network(x)
    np.savez_compressed(out / "expected.npz", input=x.numpy(), output=y.numpy())
    print(f"wrote {out}: {type(network).__name__}, output {tuple(y.shape)}, "
          f"{(out / 'fold_0' / 'checkpoint_final.pth').stat().st_size} bytes")


if __name__ == "__main__":
    for dataset, spec in DATASETS.items():
        plan(dataset, spec)
    for entry in CHECKPOINTS:
        train(*entry)
    shutil.rmtree(WORK)
    sys.exit(0)
