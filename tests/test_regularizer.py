"""MER regularizer: per-modality terms, lambda and modality weights."""

import pytest
import torch

from merdg.entropy import build_estimator
from merdg.regularizer import MERRegularizer, normalize_features


def test_total_is_lambda_times_weighted_sum():
    estimator = build_estimator("logdet")
    generator = torch.Generator().manual_seed(0)
    features = {"video": torch.randn(16, 8, generator=generator), "audio": torch.randn(16, 8, generator=generator) * 0.2}
    terms = MERRegularizer(estimator, weight=3.0, modality_weights={"audio": 0.5})(features)
    assert set(terms.per_modality) == {"video", "audio"}
    expected = 3.0 * (estimator(features["video"]) + 0.5 * estimator(features["audio"]))
    assert torch.isclose(terms.total, expected)


def test_gradient_reaches_every_modality():
    features = {name: torch.randn(12, 4, requires_grad=True) for name in ("video", "flow")}
    terms = MERRegularizer(build_estimator("koleo"), weight=1.0)(features)
    terms.total.backward()
    for name, z in features.items():
        assert z.grad is not None and z.grad.abs().sum() > 0, name


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="lambda"):
        MERRegularizer(build_estimator("logdet"), weight=-1.0)
    with pytest.raises(ValueError, match="at least one modality"):
        MERRegularizer(build_estimator("logdet"), weight=1.0)({})


def test_l2_and_standardize_normalisation():
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(3)) * 5 + 2
    unit = normalize_features(z, "l2")
    assert torch.allclose(unit.norm(dim=1), torch.ones(10), atol=1e-6)
    standard = normalize_features(z, "standardize")
    assert torch.allclose(standard.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(standard.std(dim=0, unbiased=False), torch.ones(4), atol=1e-3)
    assert normalize_features(z, "none") is z
    with pytest.raises(ValueError, match="unknown feature normalisation"):
        normalize_features(z, "whiten")


def test_standardize_makes_logdet_scale_invariant():
    z = torch.randn(32, 6, generator=torch.Generator().manual_seed(4))
    regularizer = MERRegularizer(build_estimator("logdet"), weight=1.0, normalize="standardize")
    small = regularizer({"video": z * 0.01}).total
    large = regularizer({"video": z * 100.0}).total
    assert torch.isclose(small, large, rtol=1e-4)


def test_mask_drops_rows_before_normalisation():
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([True, True, False, True, True, True, False, True])
    regularizer = MERRegularizer(build_estimator("logdet"), weight=2.0, normalize="standardize")
    masked = regularizer({"audio": z}, masks={"audio": mask})
    kept = regularizer({"audio": z[mask]})
    assert torch.isclose(masked.total, kept.total)


def test_invalid_settings_raise():
    estimator = build_estimator("logdet")
    with pytest.raises(ValueError, match="normalisation"):
        MERRegularizer(estimator, 1.0, normalize="whiten")
    with pytest.raises(ValueError, match="scope"):
        MERRegularizer(estimator, 1.0, scope="cluster")
    with pytest.raises(ValueError, match="modality weights"):
        MERRegularizer(estimator, 1.0, {"video": -1.0})
