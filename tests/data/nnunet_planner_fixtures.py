"""Write ``nnunet_planner.json``: what nnunetv2's own planner functions return, so that tests/test_planner.py can
compare unetgen's planner with them without nnunetv2 installed.

    python tests/data/nnunet_planner_fixtures.py     # needs a full nnunetv2 2.8.1 install (its planner imports
                                                     # batchgenerators, SimpleITK, ...)

* ``topology``: ``get_pool_and_conv_props(spacing, patch, 4, 999999)`` on isotropic, anisotropic and 2D cases.
* ``planner``: ``ExperimentPlanner(name).plan_experiment()`` (8 GB target) on three synthetic datasets with no
  image data: a ``dataset.json`` that lists files which do not exist (``overwrite_image_reader_writer`` set, so none
  is opened) and a hand-written ``dataset_fingerprint.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

DATASETS = {
    # 3D anisotropic CT-like (3 x 0.78 x 0.78 mm), 2 channels, 3 labels
    "Dataset901_SynthAniso": dict(
        channel_names={"0": "CT", "1": "noNorm"}, labels={"background": 0, "organ": 1, "tumor": 2},
        spacings=[[3.0, 0.78, 0.78], [3.0, 0.8, 0.8], [2.5, 0.7, 0.7], [3.0, 0.75, 0.75], [5.0, 0.78, 0.78]],
        shapes=[[100, 512, 512], [120, 512, 512], [90, 480, 480], [110, 512, 512], [60, 512, 512]],
    ),
    # 3D isotropic 1 mm MR-like, four channels, region labels
    "Dataset902_SynthIsoRegions": dict(
        channel_names={"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        labels={"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
        regions_class_order=[1, 2, 3], spacings=[[1.0, 1.0, 1.0]] * 5,
        shapes=[[138, 169, 138], [140, 172, 136], [136, 170, 140], [139, 168, 137], [141, 171, 139]],
    ),
    # 2D: one voxel thick, so only a 2d configuration
    "Dataset903_Synth2D": dict(
        channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "cell": 1},
        spacings=[[999.0, 1.0, 1.0]] * 5, shapes=[[1, 512, 640]] * 5,
    ),
}

NAMED = [
    ("isotropic 1 mm, 128³", [1.0, 1.0, 1.0], [128, 128, 128]),
    ("anisotropic 3 × 0.78 × 0.78, 48×224×192", [3.0, 0.78, 0.78], [48, 224, 192]),
    ("anisotropic, padded up: 40×200×190", [3.0, 0.78, 0.78], [40, 200, 190]),
    ("thick slices 10 × 1.5 × 1.5", [10.0, 1.5, 1.5], [20, 256, 224]),
    ("2D 1 × 1, 512²", [1.0, 1.0], [512, 512]),
    ("2D 1 × 3, 256×96", [1.0, 3.0], [256, 96]),
    ("2D 0.5 × 0.5, 1024×768", [0.5, 0.5], [1024, 768]),
    ("median with a half voxel, 111.5", [2.7, 0.78, 0.78], [111.5, 387.0, 387.0]),
]


def topology() -> list[dict]:
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    rng = random.Random(15)
    cases = list(NAMED)
    for trial in range(40):
        dims = rng.choice([2, 3])
        spacing = [round(rng.choice([0.5, 0.7, 0.78, 1.0, 1.5, 2.0, 3.0, 5.0]) * rng.uniform(0.9, 1.1), 3)
                   for _ in range(dims)]
        cases.append((f"random {trial}", spacing, [rng.randint(8, 400) for _ in range(dims)]))
    found = []
    for name, spacing, patch in cases:
        pools, strides, kernels, padded, divisible = get_pool_and_conv_props(spacing, patch, 4, 999999)
        found.append({"name": name, "spacing": spacing, "patch": patch, "pools_per_axis": [int(p) for p in pools],
                      "strides": [list(s) for s in strides], "kernels": [list(k) for k in kernels],
                      "padded_patch": [int(p) for p in padded], "divisible_by": [int(d) for d in divisible]})
    return found


def planner() -> dict:
    root = Path(tempfile.mkdtemp())
    for key, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[key] = str(root / sub)  # before nnunetv2 is imported
        (root / sub).mkdir()
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    found = {}
    for name, data in DATASETS.items():
        raw, pre = root / "raw" / name, root / "preprocessed" / name
        raw.mkdir()
        pre.mkdir()
        count, channels = len(data["spacings"]), len(data["channel_names"])
        dataset = {
            "channel_names": data["channel_names"], "labels": data["labels"], "numTraining": count,
            "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO",
            "dataset": {f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_{c:04d}.nii.gz" for c in range(channels)],
                                          "label": f"labelsTr/case_{i:03d}.nii.gz"} for i in range(count)},
        }
        if "regions_class_order" in data:
            dataset["regions_class_order"] = data["regions_class_order"]
        fingerprint = {
            "spacings": data["spacings"], "shapes_after_crop": data["shapes"],
            "foreground_intensity_properties_per_channel": {
                str(c): {"mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 3000.0,
                         "percentile_99_5": 400.0, "percentile_00_5": -100.0} for c in range(channels)},
            "median_relative_size_after_cropping": 1.0,
        }
        (raw / "dataset.json").write_text(json.dumps(dataset))
        (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
        ExperimentPlanner(name).plan_experiment()
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        configurations = {}
        for config, entry in plans["configurations"].items():
            if "architecture" not in entry:
                continue
            arch = entry["architecture"]["arch_kwargs"]
            configurations[config] = {
                "patch_size": entry["patch_size"], "batch_size": entry["batch_size"], "spacing": entry["spacing"],
                "median_image_size_in_voxels": entry["median_image_size_in_voxels"], "strides": arch["strides"],
                "kernel_sizes": arch["kernel_sizes"], "features_per_stage": arch["features_per_stage"],
            }
        found[name] = {"fingerprint": fingerprint, "channels": channels, "labels": len(data["labels"]),
                       "transpose_forward": plans["transpose_forward"], "configurations": configurations}
    return found


def main() -> None:
    versions = {name: importlib.metadata.version(name) for name in ("nnunetv2", "dynamic-network-architectures")}
    result = {
        "origin": f"nnunetv2 {versions['nnunetv2']} (dynamic-network-architectures "
                  f"{versions['dynamic-network-architectures']}): get_pool_and_conv_props and ExperimentPlanner, "
                  "written by tests/data/nnunet_planner_fixtures.py",
        "topology": topology(),
        "planner": planner(),
    }
    (HERE / "nnunet_planner.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'nnunet_planner.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
