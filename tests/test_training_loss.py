"""The training losses: the paper's weighted cross-entropy is eq. 1 with the weight map, Dice is nnU-Net's soft Dice,
deep supervision adds the heads with nnU-Net's weights, and a few optimizer steps reduce each of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unetgen
from unetgen.planning.field import head_grids
from unetgen.training.loss import Objective
from unetgen.training.optimizers import learning_rate, make_optimizer


pytestmark = pytest.mark.usefixtures("one_thread")


def test_weighted_cross_entropy_is_the_papers_energy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    weights = torch.rand(2, 4, 5) * 10
    # E = Σ w(x) log p_l(x)(x), as a mean over the pixels (Caffe's normalisation)
    log_p = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    expected = -(weights * log_p).mean()
    assert Objective("weighted-ce", "none")(logits, labels, weights).item() == pytest.approx(expected.item(), 1e-6)
    # a final softmax: the network returns probabilities, and the loss is the same
    probabilities = torch.softmax(logits, dim=1)
    assert Objective("weighted-ce", "softmax")(probabilities, labels, weights).item() == pytest.approx(
        expected.item(), 1e-5)


def test_dice_is_one_minus_the_soft_dice_of_the_foreground():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    perfect = F.one_hot(labels, 2).movedim(-1, 1).float() * 40 - 20  # confident and right
    assert Objective("ce-dice", "none")(perfect, labels).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(1, 2, 4, 4)  # p = 0.5 everywhere: Dice = 2·4 / (8 + 8) = 0.5, CE = ln 2
    assert Objective("ce-dice", "none")(half, labels).item() == pytest.approx(math.log(2) + 0.5, rel=1e-5)
    binary = torch.zeros(1, 1, 4, 4)  # one output channel: binary cross-entropy and the Dice of class 1
    assert Objective("ce-dice", "none")(binary, labels).item() == pytest.approx(math.log(2) + 0.5, rel=1e-5)


def test_deep_supervision_adds_the_heads_with_nnunets_weights():
    spec = unetgen.UNetSpec(depth=4, width=4, deep_supervision=2, input_size=[92, 92])
    model = unetgen.build(spec, seed=0)
    plan = unetgen.make_plan(spec, [92, 92])
    outputs = model(torch.randn(1, 1, 92, 92))
    assert len(outputs) == 3
    labels = torch.randint(0, 2, (1, *outputs[0].shape[2:]))
    grids = head_grids(plan)
    loss = Objective("ce", "none", grids)(outputs, labels)
    main = Objective("ce", "none")(outputs[0], labels)
    # weights 1/2^i with the lowest output 0, normalised: 2/3 and 1/3
    rows, cols = grids[1]
    top, left = rows.offset + rows.first * rows.step, cols.offset + cols.first * cols.step
    picked = labels[:, top :: rows.step, left :: cols.step]
    head = outputs[1][:, :, rows.first : rows.first + rows.count, cols.first : cols.first + cols.count]
    picked = picked[:, : rows.count, : cols.count]
    expected = 2 / 3 * main + 1 / 3 * Objective("ce", "none")(head, picked)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name, channels, final, deep", [
    ("ce", 2, "none", 0), ("weighted-ce", 2, "none", 0), ("ce-dice", 3, "softmax", 0), ("ce-dice", 1, "none", 0),
    ("ce", 2, "none", 1),
])
def test_a_few_steps_reduce_the_loss(name, channels, final, deep):
    spec = unetgen.UNetSpec(depth=3, width=8, out_channels=channels, final_activation=final, deep_supervision=deep,
                            init="paper", input_size=[60, 60])
    model = unetgen.build(spec, seed=0)
    plan = unetgen.make_plan(spec, [60, 60])
    objective = Objective(name, final, head_grids(plan) if deep else None)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2, 1, 60, 60)).astype(np.float32))
    out = plan.output_size
    labels = torch.from_numpy((rng.random((2, *out)) * max(channels, 2)).astype(np.int64))
    x[:, :, 20:-20, 20:-20] += labels.float().unsqueeze(1)  # the labels can be seen in the image
    weights = torch.from_numpy(rng.uniform(1, 3, size=(2, *out)).astype(np.float32))
    optimizer = make_optimizer("adam", model.parameters(), 1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = objective(model(x), labels, weights)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_the_optimizers():
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("sgd", parameters, 0.01)
    assert sgd.param_groups[0]["momentum"] == 0.99 and not sgd.param_groups[0]["nesterov"]
    poly = make_optimizer("sgd-poly", parameters, 0.01)
    assert poly.param_groups[0]["nesterov"] and poly.param_groups[0]["weight_decay"] == 3e-5
    assert learning_rate("sgd-poly", 0.01, 0, 10) == 0.01
    assert learning_rate("sgd-poly", 0.01, 5, 10) == pytest.approx(0.01 * 0.5**0.9)
    assert learning_rate("sgd", 0.01, 5, 10) == 0.01
