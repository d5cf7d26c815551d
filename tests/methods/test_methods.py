"""Every registered host method on every modality subset, its loss terms through the loop's metric path,
the shared losses on known values, and CMRF's teacher and SimMMDG's modules."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from merdg.config import (
    CMRFConfig,
    ConfigError,
    DataConfig,
    JobConfig,
    MERConfig,
    MethodsConfig,
    ModelConfig,
    TrainConfig,
)
from merdg.methods import CMRF, HOST_METHODS, SimMMDG, build_method
from merdg.methods.cmrf import CMRFModules
from merdg.methods.losses import info_nce_loss, supervised_contrastive_loss, unit_distance
from merdg.models import ModelOutput, MultimodalModel
from merdg.optim import build_optimizer
from merdg.training.loop import build_training, mean_train_metrics, train_step

SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(("video", "audio", "flow"), r)]

TERMS = {
    "fusion": {"ce"},
    "simmmdg": {"ce", "contrast", "distance", "translation"},
    "cmc": {"ce", "contrast"},
    "cmrf": {"ce", "unimodal_ce", "contrast", "distill"},
}
"""The named loss terms of each host method."""

SMALL_MODEL = ModelConfig(embed_dim=16, width=4, projector_hidden=16, projection_dim=8, dropout=0.0)
# CMRF distils from the first step, so that a few steps exercise the teacher.
METHODS = MethodsConfig(cmrf=CMRFConfig(start_step=0))


def make_inputs(modalities, batch=6, frames=4, size=16, spectrogram=(33, 32)):
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "video": (batch, 3, frames, size, size),
        "flow": (batch, 2, frames, size, size),
        "audio": (batch, 1, *spectrogram),
    }
    return {m: torch.randn(*shapes[m], generator=generator) for m in modalities}


LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def build(name, modalities, *, mer_enabled=True, model_config=SMALL_MODEL, methods=METHODS):
    method = build_method(name, modalities, methods, mer_enabled=mer_enabled)
    model = MultimodalModel(modalities, 3, model_config, with_projectors=method.uses_projectors, method=method)
    return method, model


def test_every_method_has_its_terms_listed():
    assert set(HOST_METHODS) == set(TERMS)


@pytest.mark.parametrize("name", sorted(HOST_METHODS))
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_host_method_lowers_its_loss(name, modalities):
    if len(modalities) < HOST_METHODS[name].min_modalities:
        with pytest.raises(ConfigError, match="needs at least 2 modalities"):
            build_method(name, modalities, METHODS)
        return
    torch.manual_seed(0)
    method, model = build(name, modalities)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = make_inputs(modalities)
    losses = []
    for _ in range(8):
        model.train()
        output = model(inputs)
        terms = method.loss_terms(output, LABELS)
        assert set(terms) == TERMS[name]
        assert all(torch.isfinite(value) for value in terms.values())
        loss = torch.stack(list(terms.values())).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(model)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    features = method.entropy_features(model(inputs))
    assert set(features) == set(method.entropy_feature_modalities())
    assert set(method.entropy_feature_modalities().values()) == set(modalities)


@pytest.mark.parametrize("name", sorted(HOST_METHODS))
def test_every_parameter_gets_a_gradient(name):
    # DDP runs without find_unused_parameters, so a trainable parameter without a gradient fails its next step.
    method, model = build(name, ["video", "audio"])
    model.train()
    output = model(make_inputs(["video", "audio"]))
    loss = torch.stack(list(method.loss_terms(output, LABELS).values())).sum()
    loss = loss + sum(f.sum() for f in method.entropy_features(output).values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


@pytest.mark.parametrize("name", sorted(HOST_METHODS))
def test_loop_metrics_name_every_term(name):
    job = JobConfig(data=DataConfig(modalities=["video", "audio"]), model=SMALL_MODEL,
                    train=TrainConfig(method=name, optimizer="lars", lr=0.1), methods=METHODS)
    mer = MERConfig(weight=1.0, estimator="logdet")
    torch.manual_seed(0)
    model, method, regularizer = build_training(job, mer, num_classes=3)
    optimizer = build_optimizer(model, job.train)
    sums = {}
    for _ in range(2):
        model.train()
        values = train_step(model, method, regularizer, optimizer, make_inputs(["video", "audio"]), LABELS)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
    metrics = mean_train_metrics(sums, 2, torch.device("cpu"))
    expected = {"train_loss", "train_mer_total"}
    expected |= {f"train_{term}" for term in TERMS[name]}
    expected |= {f"train_mer_{feature}" for feature in method.entropy_feature_modalities()}
    assert set(metrics) == expected
    assert all(math.isfinite(value) for value in metrics.values())


def test_loop_metrics_without_mer_have_no_mer_terms():
    job = JobConfig(data=DataConfig(modalities=["video", "audio"]), model=SMALL_MODEL,
                    train=TrainConfig(method="simmmdg"), methods=METHODS)
    model, method, regularizer = build_training(job, MERConfig(weight=0.0), num_classes=3)
    assert regularizer is None
    assert not any(name.startswith("method_modules.specific_heads") for name, _ in model.named_parameters())
    values = train_step(model, method, None, build_optimizer(model, job.train), make_inputs(["video", "audio"]), LABELS)
    assert set(values) == {"loss"} | TERMS["simmmdg"]


def test_mer_modality_weights_reach_every_feature_set():
    job = JobConfig(data=DataConfig(modalities=["video", "audio"]), model=SMALL_MODEL,
                    train=TrainConfig(method="simmmdg"), methods=METHODS)
    _, _, regularizer = build_training(job, MERConfig(weight=1.0, modality_weights={"video": 0.25}), num_classes=3)
    assert regularizer.modality_weights == {
        "video_shared": 0.25, "video_specific": 0.25, "audio_shared": 1.0, "audio_specific": 1.0}


def test_model_rejects_projector_mismatch():
    method = build_method("simmmdg", ["video", "audio"], METHODS)
    with pytest.raises(ValueError, match="with_projectors=False"):
        MultimodalModel(["video", "audio"], 3, SMALL_MODEL, with_projectors=True, method=method)


def test_method_modules_run_only_in_training():
    method, model = build("cmrf", ["video", "audio"])
    model.eval()
    with torch.no_grad():
        output = model(make_inputs(["video", "audio"]))
    assert output.extras == {}


def test_simmmdg_rejects_odd_embeddings():
    method = build_method("simmmdg", ["video", "audio"], METHODS)
    with pytest.raises(ConfigError, match="--model.embed_dim"):
        MultimodalModel(["video", "audio"], 3, ModelConfig(embed_dim=15, width=4), with_projectors=False,
                        method=method)


def test_simmmdg_builds_specific_heads_only_for_mer():
    _, with_mer = build("simmmdg", ["video", "audio"], mer_enabled=True)
    _, without_mer = build("simmmdg", ["video", "audio"], mer_enabled=False)
    assert set(with_mer.method_modules.specific_heads) == {"video", "audio"}
    assert len(without_mer.method_modules.specific_heads) == 0
    assert set(with_mer.method_modules.translators) == {"video_to_audio", "audio_to_video"}


def test_simmmdg_distance_is_negative_half_mse():
    method = build_method("simmmdg", ["video", "audio"], METHODS)
    embeddings = {"video": torch.tensor([[1.0, 2.0, 3.0, 6.0]]), "audio": torch.tensor([[0.0, 0.0, 1.0, 1.0]])}
    extras = {"shared.video": F.normalize(torch.ones(1, 2)), "shared.audio": F.normalize(torch.ones(1, 2)),
              "translation.video.audio": torch.ones(1, 4), "translation.audio.video": torch.ones(1, 4)}
    output = ModelOutput(embeddings=embeddings, projections={}, logits=torch.zeros(1, 3), extras=extras)
    terms = method.loss_terms(output, torch.tensor([0]))
    # The video halves' MSE is mean(2^2, 4^2) = 10 and the audio halves' is 1, so the term is -0.7 * (10 + 1) / 2.
    assert terms["distance"].item() == pytest.approx(-0.7 * 5.5)


def test_supervised_contrastive_known_value():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    views = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    loss = supervised_contrastive_loss(views, torch.tensor([0, 1]), temperature=1.0, base_temperature=1.0)
    # Each anchor's one positive has logit 1 against two zero logits: -(1 - log(2 + e)).
    assert loss.item() == pytest.approx(math.log(2 + math.e) - 1.0)


def test_supervised_contrastive_scales_by_base_temperature():
    views = F.normalize(torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1)), dim=2)
    labels = torch.tensor([0, 1, 0, 1])
    scaled = supervised_contrastive_loss(views, labels, temperature=0.1)
    plain = supervised_contrastive_loss(views, labels, temperature=0.1, base_temperature=0.1)
    assert scaled.item() == pytest.approx(plain.item() * 0.1 / 0.07)


def test_info_nce_known_value():
    identity = torch.eye(2)
    # Each anchor's own candidate has logit 1, the other one 0: -log(e / (e + 1)).
    assert info_nce_loss(identity, identity, temperature=1.0).item() == pytest.approx(math.log(1 + math.e) - 1.0)


def test_unit_distance_ignores_scale():
    predicted = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert unit_distance(predicted, target).item() == pytest.approx(math.sqrt(2.0) / 2)


def cmrf_model(**settings):
    methods = MethodsConfig(cmrf=CMRFConfig(**settings))
    method = build_method("cmrf", ["video", "audio"], methods)
    model = MultimodalModel(["video", "audio"], 3, SMALL_MODEL, with_projectors=True, method=method)
    return method, model


def teacher_vector(model):
    return torch.cat([p.detach().flatten() for p in model.method_modules.teacher.parameters()])


def student_vector(model):
    parts = list(model.encoders.parameters()) + list(model.projectors.parameters())
    return torch.cat([p.detach().flatten() for p in parts])


def perturb_student(model, scale):
    with torch.no_grad():
        for param in list(model.encoders.parameters()) + list(model.projectors.parameters()):
            param.add_(scale)


def test_cmrf_teacher_copies_student_before_start():
    method, model = cmrf_model(start_step=2)
    perturb_student(model, 0.5)
    method.after_optimizer_step(model)
    assert torch.equal(teacher_vector(model), student_vector(model))
    assert not model.method_modules.distilling
    method.after_optimizer_step(model)
    assert model.method_modules.distilling


def test_cmrf_simple_average_weighs_steps_equally():
    method, model = cmrf_model(start_step=1, teacher_average="simple")
    snapshots = []
    for step in range(4):
        perturb_student(model, 0.1 * (step + 1))
        snapshots.append(student_vector(model))
        method.after_optimizer_step(model)
    # Step 1 copies the student; steps 2 to 4 average it in with equal weights.
    expected = torch.stack(snapshots).mean(dim=0)
    assert torch.allclose(teacher_vector(model), expected, atol=1e-6)


def test_cmrf_exponential_average_follows_momentum():
    method, model = cmrf_model(start_step=0, teacher_average="exponential", ema_momentum=0.9)
    before = teacher_vector(model)
    perturb_student(model, 1.0)
    method.after_optimizer_step(model)
    assert torch.allclose(teacher_vector(model), 0.9 * before + 0.1 * student_vector(model), atol=1e-6)


def test_cmrf_teacher_is_frozen_and_in_eval_mode():
    method, model = cmrf_model()
    model.train()
    teacher = model.method_modules.teacher
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    optimizer = build_optimizer(model, TrainConfig())
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_cmrf_distill_is_zero_before_start():
    method, model = cmrf_model(start_step=5)
    model.train()
    terms = method.loss_terms(model(make_inputs(["video", "audio"])), LABELS)
    assert terms["distill"].item() == 0.0


def test_cmrf_mixing_coefficients_lie_on_their_side():
    _, model = cmrf_model()
    modules: CMRFModules = model.method_modules
    like = torch.zeros(1000, 4)
    above = modules._mixing_coefficients(like, above_half=True)
    below = modules._mixing_coefficients(like, above_half=False)
    assert above.shape == (1000, 1)
    assert bool((above >= 0.5).all())
    assert bool((below <= 0.5).all())


def test_cmrf_teacher_state_is_checkpointed():
    method, model = cmrf_model(start_step=0)
    method.after_optimizer_step(model)
    state = model.state_dict()
    assert int(state["method_modules.num_updates"]) == 1
    assert any(name.startswith("method_modules.teacher.encoders.") for name in state)
    restored = cmrf_model(start_step=0)[1]
    restored.load_state_dict(state)
    assert int(restored.method_modules.num_updates) == 1


def test_method_classes_are_exported():
    assert HOST_METHODS["cmrf"] is CMRF
    assert HOST_METHODS["simmmdg"] is SimMMDG
