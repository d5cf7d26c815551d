"""Estimator tests: MER-DG's log-det loss against a direct float64 formula, KoLeo's edge cases."""

import math

import pytest
import torch

from merdg.entropy import ESTIMATORS, build_estimator, marginal_hinge, spectral_logdet


def reference_logdet_loss(z: torch.Tensor, gamma=1.0, eps=1e-4, a_marg=1.0, a_spec=1.0) -> torch.Tensor:
    """The MER-DG loss written out term by term (loops, slogdet), independent of the library code."""
    n, d = z.shape
    marginal = 0.0
    for j in range(d):
        column = z[:, j]
        variance = ((column - column.mean()) ** 2).sum() / (n - 1)
        marginal = marginal + torch.clamp(gamma - torch.sqrt(variance + 1e-4), min=0.0)
    marginal = marginal / d
    centred = z - z.mean(dim=0)
    biased_std = torch.sqrt((centred**2).mean(dim=0))
    standardised = centred / (biased_std + eps)
    correlation = standardised.T @ standardised / (n - 1)
    spectral = -torch.linalg.slogdet(correlation + eps * torch.eye(d, dtype=z.dtype)).logabsdet / d
    return a_marg * marginal + a_spec * spectral


@pytest.mark.parametrize("shape", [(64, 8), (16, 32), (48, 128)])
def test_logdet_matches_reference_value_and_gradient(shape):
    generator = torch.Generator().manual_seed(0)
    z = (torch.randn(*shape, generator=generator, dtype=torch.float64) * 0.7).requires_grad_(True)
    ours = spectral_logdet(z) + marginal_hinge(z)
    (ours_grad,) = torch.autograd.grad(ours, z)
    z_ref = z.detach().clone().requires_grad_(True)
    reference = reference_logdet_loss(z_ref)
    (reference_grad,) = torch.autograd.grad(reference, z_ref)
    assert abs(ours.item() - reference.item()) < 1e-6
    assert torch.allclose(ours_grad, reference_grad, atol=1e-6, rtol=0)


def test_logdet_estimator_runs_in_float32_and_matches_reference():
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    estimator = build_estimator("logdet")
    value = estimator(z.half())
    assert value.dtype == torch.float32
    reference = reference_logdet_loss(z.half().double())
    assert abs(value.item() - reference.item()) < 1e-3


def test_logdet_ablation_weights_select_one_term():
    z = torch.randn(40, 8, generator=torch.Generator().manual_seed(2)) * 0.3
    marginal_only = build_estimator("logdet", a_marg=1.0, a_spec=0.0)(z)
    spectral_only = build_estimator("logdet", a_marg=0.0, a_spec=1.0)(z)
    assert torch.isclose(marginal_only, marginal_hinge(z))
    assert torch.isclose(spectral_only, spectral_logdet(z))
    assert torch.isclose(build_estimator("logdet", terms="marginal")(z), marginal_hinge(z))
    assert torch.isclose(build_estimator("logdet", terms="spectral")(z), spectral_logdet(z))
    with pytest.raises(ValueError, match="not both 0"):
        build_estimator("logdet", a_marg=0.0, a_spec=0.0)
    with pytest.raises(ValueError, match="terms"):
        build_estimator("logdet", terms="neither")
    with pytest.raises(ValueError, match="gamma"):
        build_estimator("logdet", gamma=-1.0)


def test_logdet_rewards_spread_and_decorrelation():
    generator = torch.Generator().manual_seed(3)
    spread = torch.randn(256, 4, generator=generator)
    collapsed = spread.clone()
    collapsed[:, 1] = collapsed[:, 0]
    narrow = spread * 0.1
    estimator = build_estimator("logdet")
    assert estimator(spread) < estimator(collapsed)
    assert estimator(spread) < estimator(narrow)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("n", [1, 2, 5])
def test_estimators_finite_on_small_and_degenerate_batches(name, n):
    estimator = build_estimator(name)
    cases = {
        "random": torch.randn(n, 16),
        "zeros": torch.zeros(n, 16),
        "duplicates": torch.ones(n, 16),
    }
    for case, z in cases.items():
        z = z.clone().requires_grad_(True)
        value = estimator(z)
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(value), f"{name} on {case} (N={n}) gave {value}"
        assert torch.isfinite(grad).all(), f"{name} on {case} (N={n}) gave a non-finite gradient"


def test_koleo_matches_nearest_neighbour_formula():
    z = torch.randn(10, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    unit = z / z.norm(dim=1, keepdim=True)
    distances = torch.cdist(unit, unit) + torch.diag(torch.full((10,), math.inf, dtype=torch.float64))
    expected = -torch.log(distances.min(dim=1).values + 1e-8).mean()
    value = build_estimator("koleo")(z)
    assert abs(value.item() - expected.item()) < 1e-5


def test_koleo_prefers_spread_points():
    generator = torch.Generator().manual_seed(5)
    spread = torch.randn(64, 8, generator=generator)
    clustered = torch.randn(1, 8, generator=generator) + 0.01 * torch.randn(64, 8, generator=generator)
    estimator = build_estimator("koleo")
    assert estimator(spread) < estimator(clustered)


def test_unknown_estimator_and_bad_parameter_raise():
    with pytest.raises(KeyError, match="unknown entropy estimator 'shannon'"):
        build_estimator("shannon")
    with pytest.raises(TypeError, match="invalid parameters"):
        build_estimator("koleo", temperature=2.0)


def test_estimator_rejects_non_matrix_input():
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        build_estimator("logdet")(torch.zeros(4, 3, 2))
