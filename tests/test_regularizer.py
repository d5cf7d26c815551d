"""MER regularizer: per-modality terms, lambda and modality weights."""

import pytest
import torch

from merdg.entropy import build_estimator
from merdg.regularizer import MERRegularizer


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
