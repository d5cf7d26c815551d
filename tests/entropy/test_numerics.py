"""Numerical behaviour of every registered estimator: degenerate batches, precisions, masks, spread."""

import pytest
import torch
from torch import nn

from merdg.entropy import ESTIMATORS, build_estimator

# Parameters for gradcheck where a default computes part of the loss without gradient
# (the median kernel width of renyi), which a finite-difference check would count.
GRADCHECK_PARAMS = {"renyi": {"sigma": 1.5}}


def degenerate_batches(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(n, d, generator=generator)
    direction = torch.randn(1, d, generator=generator)
    with_zero_row = random.clone()
    with_zero_row[0] = 0.0
    return {
        "random": random,
        "zeros": torch.zeros(n, d),
        "duplicates": torch.ones(n, d),
        "near_duplicates": direction + 1e-6 * torch.randn(n, d, generator=generator),
        "rank_one": torch.linspace(-2.0, 3.0, n)[:, None] * direction,
        "one_zero_row": with_zero_row,
        "large": 1e3 * random,
        "tiny": 1e-6 * random,
    }


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("shape", [(1, 16), (2, 16), (3, 16), (8, 32), (40, 8)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_finite_value_and_gradient(name, shape):
    estimator = build_estimator(name)
    for case, z in degenerate_batches(*shape, seed=0).items():
        z = z.clone().requires_grad_(True)
        value = estimator(z)
        (grad,) = torch.autograd.grad(value, z)
        assert value.dtype == torch.float32, f"{name} on {case}"
        assert value.shape == (), f"{name} on {case}"
        assert torch.isfinite(value), f"{name} on {case} {shape} gave {value}"
        assert torch.isfinite(grad).all(), f"{name} on {case} {shape} gave a non-finite gradient"


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_single_row_gives_connected_zero(name):
    z = torch.randn(1, 8).requires_grad_(True)
    value = build_estimator(name)(z)
    (grad,) = torch.autograd.grad(value, z)
    assert value.item() == 0.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_input_computes_in_float32(name, dtype):
    z = torch.randn(24, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    estimator = build_estimator(name)
    value = estimator(z)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert torch.allclose(value, estimator(z.float()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_autocast_region_computes_in_float32(name):
    torch.manual_seed(2)
    layer = nn.Linear(8, 12)
    x = torch.randn(24, 8)
    estimator = build_estimator(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = layer(x)
        value = estimator(features)
    assert features.dtype == torch.bfloat16
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert torch.allclose(value, estimator(features.float()), rtol=1e-5, atol=1e-6)
    value.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_mask_equals_running_on_kept_rows(name):
    z = torch.randn(20, 6, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    mask = torch.arange(20) % 3 != 1
    estimator = build_estimator(name)
    masked = estimator(z, mask)
    on_kept_rows = estimator(z.detach()[mask])
    (grad,) = torch.autograd.grad(masked, z)
    # Not bitwise: the matrix products may round differently for the copied rows. Renyi's
    # 1 / (1 - alpha) factor (100 at its default alpha of 1.01) scales that float32 rounding of
    # about 1e-7 per eigenvalue up to about 1e-5, so it gets a wider tolerance.
    rtol = 1e-3 if name == "renyi" else 1e-5
    assert torch.allclose(masked.detach(), on_kept_rows, rtol=rtol, atol=1e-6)
    assert torch.count_nonzero(grad[~mask]) == 0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_mask_keeping_one_row_gives_zero(name):
    z = torch.randn(5, 6)
    mask = torch.tensor([False, False, True, False, False])
    assert build_estimator(name)(z, mask).item() == 0.0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_more_spread_gives_lower_loss(name):
    # The squeezed batch keeps two directions and shrinks the other six 20-fold, so it is less
    # spread both as raw features and after normalising the rows to the unit sphere.
    n, d = 128, 8
    spread = torch.randn(n, d, generator=torch.Generator().manual_seed(4))
    shrink = torch.full((d,), 0.05)
    shrink[:2] = 1.0
    squeezed = spread * shrink
    estimator = build_estimator(name)
    assert estimator(spread) < estimator(squeezed)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_gradient_matches_finite_differences(name):
    estimator = build_estimator(name, **GRADCHECK_PARAMS.get(name, {}))
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.8
    assert torch.autograd.gradcheck(estimator.loss, (z.requires_grad_(True),), eps=1e-6, atol=1e-5)


INVALID_PARAMETERS = [
    ("uniformity", {"t": 0.0}, "t must be"),
    ("uniformity", {"t": float("inf")}, "t must be"),
    ("coding_rate", {"eps_sq": -0.1}, "eps_sq must be"),
    ("renyi", {"alpha": 0.0}, "alpha must be"),
    ("renyi", {"sigma": -1.0}, "sigma must be"),
    ("vicreg", {"var_weight": -1.0}, "weights must be"),
    ("vicreg", {"var_weight": 0.0, "cov_weight": 0.0}, "not both be 0"),
    ("vicreg", {"gamma": 0.0}, "gamma must be"),
    ("vicreg", {"eps": 0.0}, "eps must be"),
]


@pytest.mark.parametrize(("name", "params", "message"), INVALID_PARAMETERS)
def test_invalid_parameter_raises(name, params, message):
    with pytest.raises(ValueError, match=message):
        build_estimator(name, **params)


def test_entropy_nats_rejects_too_few_rows():
    with pytest.raises(ValueError, match="at least 5 rows"):
        build_estimator("logdet").entropy_nats(torch.randn(4, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        build_estimator("koleo").entropy_nats(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        build_estimator("koleo").entropy_nats(torch.randn(4))
