"""LARS on hand-computed steps, the optimizer choice of --train.optimizer, and the encoders' learning rate."""

import math

import pytest
import torch
from torch import nn

from merdg.config import ConfigError, ModelConfig, TrainConfig
from merdg.models import MultimodalModel
from merdg.optim import LARS, build_optimizer
from tests.models.test_multimodal import make_inputs


def lars_with(weight, grad, **options):
    param = nn.Parameter(torch.tensor(weight, dtype=torch.float64))
    optimizer = LARS([param], **options)
    param.grad = torch.tensor(grad, dtype=torch.float64)
    return param, optimizer


def test_lars_first_step_matches_formula():
    # ||w|| = 5, ||g|| = 1: ratio = 0.001 * 5 / (1 + 0.1 * 5) = 1 / 300, u = g + 0.1 w = (0.9, 1.2).
    param, optimizer = lars_with([[3.0, 4.0]], [[0.6, 0.8]], lr=1.0, momentum=0.9, weight_decay=0.1,
                                 eta=0.001, eps=0.0)
    optimizer.step()
    expected = torch.tensor([[3.0 - 0.9 / 300, 4.0 - 1.2 / 300]], dtype=torch.float64)
    assert torch.allclose(param.detach(), expected, rtol=0, atol=1e-12)


def test_lars_second_step_adds_momentum():
    param, optimizer = lars_with([[3.0, 4.0]], [[0.6, 0.8]], lr=0.5, momentum=0.9, weight_decay=0.1,
                                 eta=0.001, eps=0.0)
    optimizer.step()
    first = [0.9 / 300, 1.2 / 300]
    after_first = [3.0 - 0.5 * first[0], 4.0 - 0.5 * first[1]]
    norm = math.hypot(*after_first)
    ratio = 0.001 * norm / (1.0 + 0.1 * norm)
    second = [0.9 * first[i] + ratio * ([0.6, 0.8][i] + 0.1 * after_first[i]) for i in range(2)]
    optimizer.step()
    expected = torch.tensor([[after_first[i] - 0.5 * second[i] for i in range(2)]], dtype=torch.float64)
    assert torch.allclose(param.detach(), expected, rtol=0, atol=1e-12)


def test_lars_excludes_biases_from_adaptation():
    param, optimizer = lars_with([1.0], [0.5], lr=1.0, momentum=0.9, weight_decay=0.1, eta=0.001, eps=0.0)
    optimizer.step()
    assert param.item() == pytest.approx(0.5, abs=1e-12)


def test_lars_adapts_biases_when_asked():
    # ratio = 0.001 * 1 / (0.5 + 0.1 * 1), u = 0.5 + 0.1 * 1 = 0.6, so the step is 0.001.
    param, optimizer = lars_with([1.0], [0.5], lr=1.0, momentum=0.9, weight_decay=0.1, eta=0.001, eps=0.0,
                                 exclude_bias_and_norm=False)
    optimizer.step()
    assert param.item() == pytest.approx(0.999, abs=1e-12)


def test_lars_zero_weight_takes_plain_step():
    param, optimizer = lars_with([[0.0, 0.0]], [[0.6, 0.8]], lr=0.1, momentum=0.9, weight_decay=0.1, eta=0.001)
    optimizer.step()
    assert torch.allclose(param.detach(), torch.tensor([[-0.06, -0.08]], dtype=torch.float64), atol=1e-12)


def test_lars_skips_parameters_without_gradient():
    param = nn.Parameter(torch.ones(2, 2))
    optimizer = LARS([param], lr=1.0)
    optimizer.step()
    assert torch.equal(param.detach(), torch.ones(2, 2))
    assert param not in optimizer.state


@pytest.mark.parametrize("options", [{"lr": 0.0}, {"lr": 1.0, "momentum": 1.0}, {"lr": 1.0, "eta": 0.0},
                                     {"lr": 1.0, "weight_decay": -1.0}])
def test_lars_rejects_invalid_settings(options):
    with pytest.raises(ValueError, match="LARS"):
        LARS([nn.Parameter(torch.ones(1))], **options)


def test_lars_lowers_a_quadratic():
    param = nn.Parameter(torch.full((4, 4), 2.0))
    optimizer = LARS([param], lr=10.0, momentum=0.9, weight_decay=0.0, eta=0.01)
    losses = []
    for _ in range(20):
        loss = (param ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_build_optimizer_picks_adam_or_lars():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    adam = build_optimizer(model, TrainConfig(optimizer="adam", lr=0.01))
    lars = build_optimizer(model, TrainConfig(optimizer="lars", lr=0.01, lars_eta=0.02, lars_momentum=0.5))
    assert isinstance(adam, torch.optim.Adam)
    assert isinstance(lars, LARS)
    assert lars.param_groups[0]["eta"] == 0.02
    assert lars.param_groups[0]["momentum"] == 0.5
    trainable = {id(p) for p in model[1].parameters()}
    assert {id(p) for p in adam.param_groups[0]["params"]} == trainable
    assert {id(p) for p in lars.param_groups[0]["params"]} == trainable


@pytest.mark.parametrize("optimizer", ["adam", "lars"])
def test_encoder_lr_scale_sets_encoder_group_lr(optimizer):
    model = MultimodalModel(["video", "audio"], 3, ModelConfig(embed_dim=8, width=2, projector_hidden=8,
                                                                projection_dim=4, fusion_hidden=8),
                            with_projectors=True)
    built = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=0.01, encoder_lr_scale=0.1))
    groups = {group["name"]: group for group in built.param_groups}
    assert set(groups) == {"encoders", "heads"}
    assert groups["encoders"]["lr"] == pytest.approx(0.001)
    assert groups["heads"]["lr"] == 0.01
    assert {id(p) for p in groups["encoders"]["params"]} == {id(p) for p in model.encoders.parameters()}
    heads = [*model.head.parameters(), *model.projectors.parameters()]
    assert {id(p) for p in groups["heads"]["params"]} == {id(p) for p in heads}


def test_encoder_lr_scale_scales_the_first_adam_step():
    # Adam's first step moves every parameter by about lr, whatever its gradient's size.
    model = MultimodalModel(["audio"], 2, ModelConfig(embed_dim=4, width=2, fusion_hidden=4), with_projectors=False)
    optimizer = build_optimizer(model, TrainConfig(lr=0.01, weight_decay=0.0, encoder_lr_scale=0.1))
    encoder_before = model.encoders["audio"].embed.bias.detach().clone()
    head_before = model.head.layers[3].bias.detach().clone()
    model(make_inputs(["audio"])).logits.sum().backward()
    optimizer.step()
    encoder_step = (model.encoders["audio"].embed.bias.detach() - encoder_before).abs()
    head_step = (model.head.layers[3].bias.detach() - head_before).abs()
    assert torch.allclose(encoder_step[encoder_step > 0], torch.tensor(0.001), rtol=1e-3)
    assert torch.allclose(head_step[head_step > 0], torch.tensor(0.01), rtol=1e-3)


def test_frozen_encoders_leave_only_heads_group():
    config = ModelConfig(embed_dim=8, width=2, fusion_hidden=8, trainable_from="head")
    model = MultimodalModel(["video", "flow"], 3, config, with_projectors=False)
    built = build_optimizer(model, TrainConfig())
    assert [group["name"] for group in built.param_groups] == ["heads"]


def test_encoder_lr_scale_must_be_positive():
    with pytest.raises(ConfigError, match="train.encoder_lr_scale.*trainable_from head"):
        TrainConfig(encoder_lr_scale=0.0)
