"""Estimator values against closed forms, exact identities and direct float64 formulas."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from merdg.entropy import ESTIMATORS, build_estimator, median_bandwidth, off_diagonal_covariance
from merdg.entropy.gram import squared_distances


def float64_batch(n, d, seed, scale=1.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def random_rotation(d, seed):
    q, r = torch.linalg.qr(float64_batch(d, d, seed))
    return q * torch.sign(torch.diagonal(r))


def unit(z):
    return z / z.norm(dim=1, keepdim=True)


# Direct float64 formulas, written independently of the library code (loops, numpy, slogdet).


def reference_uniformity(z, t=2.0):
    u = unit(z)
    n = u.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += math.exp(-t * float(((u[i] - u[j]) ** 2).sum()))
    return math.log(total / (n * (n - 1)))


def reference_coding_rate(z, eps_sq=0.5):
    u = unit(z)
    n, d = u.shape
    matrix = torch.eye(d, dtype=torch.float64) + d / (n * eps_sq) * (u.T @ u)
    return -0.5 * torch.linalg.slogdet(matrix).logabsdet.item()


def reference_von_neumann(z):
    u = unit(z).numpy()
    rho = u.T @ u
    rho = rho / np.trace(rho)
    eigenvalues = np.linalg.eigvalsh(rho)
    eigenvalues = eigenvalues[eigenvalues > 1e-15]
    return float((eigenvalues * np.log(eigenvalues)).sum())


def reference_renyi(z, alpha=1.01, sigma=None):
    x = z.numpy()
    n = x.shape[0]
    distances = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
    if sigma is None:
        pairs = np.sort(distances[np.triu_indices(n, k=1)])
        sigma = pairs[(len(pairs) - 1) // 2]
    gram = np.exp(-(distances**2) / (2 * sigma**2))
    eigenvalues = np.clip(np.linalg.eigvalsh(gram / np.trace(gram)), 1e-12, None)
    return -float(np.log2((eigenvalues**alpha).sum()) / (1 - alpha))


def reference_vicreg(z, var_weight=1.0, cov_weight=1.0):
    x = z.numpy()
    n, d = x.shape
    centred = x - x.mean(axis=0)
    covariance = centred.T @ centred / (n - 1)
    variance_term = np.mean([max(0.0, 1.0 - math.sqrt(covariance[k, k] + 1e-4)) for k in range(d)])
    covariance_term = sum(covariance[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return var_weight * variance_term + cov_weight * covariance_term


REFERENCES = {
    "uniformity": reference_uniformity,
    "coding_rate": reference_coding_rate,
    "von_neumann": reference_von_neumann,
    "renyi": reference_renyi,
    "vicreg": reference_vicreg,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (7, 7)])
def test_estimator_matches_float64_reference(name, shape):
    z = float64_batch(*shape, seed=10) * 0.8 + 0.3
    estimator = build_estimator(name)
    expected = REFERENCES[name](z)
    float64_value = estimator.loss(z)
    float32_value = estimator(z)
    assert abs(float64_value.item() - expected) < 1e-9
    assert abs(float32_value.item() - expected) < 1e-4


def test_renyi_fixed_sigma_matches_reference():
    z = float64_batch(9, 4, seed=11)
    estimator = build_estimator("renyi", alpha=0.7, sigma=1.3)
    assert abs(estimator.loss(z).item() - reference_renyi(z, alpha=0.7, sigma=1.3)) < 1e-9


def test_median_bandwidth_handles_coincident_rows():
    many_duplicates = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    all_equal = torch.ones(4, 2, dtype=torch.float64)
    # 3 of the 6 pairs coincide, so the lower median is 0 and the mean distance 3 * 5 / 6 is used.
    assert median_bandwidth(squared_distances(many_duplicates)).item() == pytest.approx(2.5)
    assert median_bandwidth(squared_distances(all_equal)).item() == 1.0


# Closed forms.


def gaussian_entropy(covariance):
    d = covariance.shape[0]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + torch.logdet(covariance).item())


def test_gaussian_entropy_nats_on_known_covariance():
    d, n, repeats = 4, 2000, 8
    factor = float64_batch(d, d, seed=20)
    covariance = factor @ factor.T + 0.5 * torch.eye(d, dtype=torch.float64)
    cholesky = torch.linalg.cholesky(covariance)
    estimator = build_estimator("logdet")
    estimates = np.array(
        [estimator.entropy_nats(float64_batch(n, d, seed=100 + r) @ cholesky.T).item() for r in range(repeats)]
    )
    # For Gaussian rows, log det of the sample covariance has std about sqrt(2 D / (N - 1)) and
    # mean log det(Sigma) - D (D + 1) / (2 N), so the entropy has half of each.
    spread = math.sqrt(d / (2 * (n - 1)))
    bias = -d * (d + 1) / (4 * n)
    exact = gaussian_entropy(covariance)
    assert abs(estimates.mean() - (exact + bias)) < 4 * spread / math.sqrt(repeats)
    assert estimates.std() < 2 * spread


def test_koleo_entropy_nats_on_known_covariance():
    d, n, repeats = 2, 2000, 6
    covariance = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    cholesky = torch.linalg.cholesky(covariance)
    estimator = build_estimator("koleo")
    estimates = np.array(
        [estimator.entropy_nats(float64_batch(n, d, seed=200 + r) @ cholesky.T).item() for r in range(repeats)]
    )
    # The 1-nearest-neighbour estimate has a per-batch std of about 0.04 nats here (measured over
    # 40 batches) and a small bias at finite N, so the mean of 6 batches gets 0.06 nats.
    assert abs(estimates.mean() - gaussian_entropy(covariance)) < 0.06
    assert estimates.std() < 0.1


def test_koleo_entropy_nats_on_regular_grid():
    # Rows on a 1-D grid of spacing h: every nearest-neighbour distance is h.
    n, spacing = 50, 0.1
    grid = (torch.arange(n, dtype=torch.float64) * spacing)[:, None]
    expected = float(torch.special.digamma(torch.tensor(float(n), dtype=torch.float64))) + 0.5772156649015329
    expected += math.log(2.0) + math.log(spacing)
    assert build_estimator("koleo").entropy_nats(grid).item() == pytest.approx(expected, abs=1e-12)


def test_entropy_nats_matches_scipy_in_one_dimension():
    rng = np.random.default_rng(30)
    samples = {
        "gaussian": [rng.normal(scale=1.7, size=2000) for _ in range(5)],
        "uniform": [rng.uniform(0.0, 2.0, size=2000) for _ in range(5)],
    }
    koleo = build_estimator("koleo")
    logdet = build_estimator("logdet")
    for kind, batches in samples.items():
        scipy_mean = np.mean([stats.differential_entropy(batch) for batch in batches])
        koleo_mean = np.mean([koleo.entropy_nats(torch.from_numpy(batch)[:, None]).item() for batch in batches])
        # Loose: the 1-NN estimate has a std of about 0.03 nats per batch of 2000, and scipy's
        # spacing estimate is biased low by about 0.02 nats at the edges of a uniform density.
        assert abs(koleo_mean - scipy_mean) < 0.06, kind
    gaussian_mean = np.mean([logdet.entropy_nats(torch.from_numpy(b)[:, None]).item() for b in samples["gaussian"]])
    scipy_gaussian = np.mean([stats.differential_entropy(b) for b in samples["gaussian"]])
    assert abs(gaussian_mean - scipy_gaussian) < 0.03


def sphere_uniformity(d, t):
    """Return log E exp(-t ||x - y||^2) for x, y independent and uniform on the unit sphere in R^d.

    ||x - y||^2 = 2 (1 - x.y), and x.y has density proportional to (1 - u^2)^((d - 3) / 2) on [-1, 1].
    """
    weight = lambda u: (1.0 - u * u) ** ((d - 3) / 2)  # noqa: E731
    numerator, _ = integrate.quad(lambda u: math.exp(-2.0 * t * (1.0 - u)) * weight(u), -1.0, 1.0)
    denominator, _ = integrate.quad(weight, -1.0, 1.0)
    return math.log(numerator / denominator)


@pytest.mark.parametrize("d", [3, 8])
def test_uniformity_on_sphere_matches_closed_form(d):
    t = 2.0
    if d == 3:
        # x.y is uniform on [-1, 1], so the integral is (1 - exp(-4 t)) / (4 t).
        assert sphere_uniformity(3, t) == pytest.approx(math.log((1 - math.exp(-4 * t)) / (4 * t)), rel=1e-10)
    estimator = build_estimator("uniformity", t=t)
    values = np.array([estimator(float64_batch(1000, d, seed=300 + r)).item() for r in range(3)])
    # The std over 10 batches of 2000 points was about 1e-3, so about 1.5e-3 for 1000 points,
    # and 0.01 is several stds.
    assert abs(values.mean() - sphere_uniformity(d, t)) < 0.01


def plus_minus_basis(d):
    basis = torch.eye(d, dtype=torch.float64)
    return torch.cat([basis, -basis])


def mercedes_frame():
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


TIGHT_FRAMES = {
    "plus_minus_basis": lambda: plus_minus_basis(6),
    "rotated_plus_minus_basis": lambda: plus_minus_basis(6) @ random_rotation(6, seed=40).T,
    "mercedes": mercedes_frame,
    "orthonormal_rows": lambda: random_rotation(8, seed=41)[:3],
}


def max_coding_rate(n, d, eps_sq):
    rank = min(n, d)
    return 0.5 * rank * math.log(1 + d / (rank * eps_sq))


@pytest.mark.parametrize("frame", sorted(TIGHT_FRAMES))
def test_coding_rate_maximal_on_tight_frames(frame):
    rows = TIGHT_FRAMES[frame]()
    n, d = rows.shape
    for eps_sq in (0.5, 0.05):
        estimator = build_estimator("coding_rate", eps_sq=eps_sq)
        maximum = max_coding_rate(n, d, eps_sq)
        assert estimator.loss(rows).item() == pytest.approx(-maximum, abs=1e-9)
        random_rows = float64_batch(n, d, seed=42)
        assert estimator.loss(random_rows).item() > -maximum + 1e-3
        perturbed = rows + 0.05 * float64_batch(n, d, seed=43)
        assert estimator.loss(perturbed).item() > -maximum


@pytest.mark.parametrize("frame", sorted(TIGHT_FRAMES))
def test_von_neumann_maximal_on_tight_frames(frame):
    rows = TIGHT_FRAMES[frame]()
    n, d = rows.shape
    estimator = build_estimator("von_neumann")
    maximum = math.log(min(n, d))
    assert estimator.loss(rows).item() == pytest.approx(-maximum, abs=1e-9)
    assert estimator.loss(float64_batch(n, d, seed=44)).item() > -maximum + 1e-3
    assert estimator.loss(rows + 0.05 * float64_batch(n, d, seed=45)).item() > -maximum


def test_von_neumann_is_zero_for_parallel_rows():
    direction = float64_batch(1, 5, seed=46)
    scales = torch.tensor([[1.0], [2.5], [-0.3], [7.0]], dtype=torch.float64)
    value = build_estimator("von_neumann").loss(scales * direction)
    assert abs(value.item()) < 1e-9


def test_renyi_order_two_equals_frobenius_form():
    # sum_k lambda_k^2 = ||A||_F^2 = sum_ij K_ij^2 / N^2 for the symmetric A = K / N.
    z = float64_batch(10, 3, seed=50)
    sigma = 1.1
    gram = torch.exp(-torch.cdist(z, z) ** 2 / (2 * sigma**2))
    expected = math.log2((gram**2).sum().item() / 100)
    assert build_estimator("renyi", alpha=2.0, sigma=sigma).loss(z).item() == pytest.approx(expected, abs=1e-9)


def test_renyi_bounds_and_shannon_limit():
    n = 8
    far_apart = torch.eye(n, dtype=torch.float64) * 100.0
    identical = torch.ones(n, 3, dtype=torch.float64)
    z = float64_batch(n, 3, seed=51)
    assert build_estimator("renyi", sigma=1.0).loss(far_apart).item() == pytest.approx(-math.log2(n), abs=1e-6)
    assert abs(build_estimator("renyi").loss(identical).item()) < 1e-6
    shannon = build_estimator("renyi", alpha=1.0).loss(z).item()
    near_one = build_estimator("renyi", alpha=1.0 + 1e-6).loss(z).item()
    assert shannon == pytest.approx(near_one, abs=1e-4)
    assert build_estimator("renyi", alpha=0.5).loss(z).item() < shannon < build_estimator("renyi", alpha=2.0).loss(z).item()


def test_vicreg_known_values():
    n, d = 12, 6
    # Rows +-c e_k give every column the unbiased variance 2 c^2 / (N - 1) = 1 and zero covariances.
    decorrelated = plus_minus_basis(d) * math.sqrt((n - 1) / 2)
    estimator = build_estimator("vicreg")
    assert abs(estimator.loss(decorrelated).item()) < 1e-12
    assert estimator.loss(torch.zeros(n, d, dtype=torch.float64)).item() == pytest.approx(1.0 - math.sqrt(1e-4))


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_off_diagonal_covariance_both_gram_forms(shape):
    z = float64_batch(*shape, seed=52)
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (shape[0] - 1)
    expected = ((covariance**2).sum() - (torch.diagonal(covariance) ** 2).sum()) / shape[1]
    assert off_diagonal_covariance(z).item() == pytest.approx(expected.item(), abs=1e-12)


# Exact invariances. Each registered estimator must declare which transforms leave its loss
# unchanged; the test checks both the declared invariances and that the others do change it.
# The tolerance 1e-7 covers KoLeo, whose F.pairwise_distance adds eps = 1e-8 to every coordinate
# of the difference, which breaks rotation invariance by about 1e-9.

INVARIANCES = {
    "logdet": {"translation"},
    "koleo": {"scale", "rotation"},
    "uniformity": {"scale", "rotation"},
    "coding_rate": {"scale", "rotation"},
    "von_neumann": {"scale", "rotation"},
    "renyi": {"scale", "rotation", "translation"},
    "vicreg": {"translation"},
}

TRANSFORMS = {
    "scale": lambda z: 3.7 * z,
    "rotation": lambda z: z @ random_rotation(z.shape[1], seed=60).T,
    "translation": lambda z: z + torch.linspace(-2.0, 3.0, z.shape[1], dtype=z.dtype),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_declared_invariances_are_exact(name):
    assert name in INVARIANCES, f"declare the invariances of {name!r} in INVARIANCES"
    column_scales = torch.linspace(0.2, 1.5, 6, dtype=torch.float64)
    z = float64_batch(48, 6, seed=61) * column_scales + 0.4
    estimator = build_estimator(name)
    value = estimator.loss(z).item()
    for transform, apply in TRANSFORMS.items():
        transformed = estimator.loss(apply(z)).item()
        if transform in INVARIANCES[name]:
            assert transformed == pytest.approx(value, abs=1e-7), f"{name} changed under {transform}"
        else:
            assert abs(transformed - value) > 1e-5, f"{name} unchanged under {transform}; declare it"


@pytest.mark.parametrize("name", ["logdet", "koleo"])
def test_entropy_nats_identities(name):
    d = 5
    z = float64_batch(300, d, seed=62) * torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    estimator = build_estimator(name)
    value = estimator.entropy_nats(z).item()
    scale = 0.37
    assert estimator.entropy_nats(TRANSFORMS["translation"](z)).item() == pytest.approx(value, abs=1e-9)
    assert estimator.entropy_nats(TRANSFORMS["rotation"](z)).item() == pytest.approx(value, abs=1e-9)
    assert estimator.entropy_nats(scale * z).item() == pytest.approx(value + d * math.log(scale), abs=1e-9)
