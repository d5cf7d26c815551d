"""Known-answer tests for the feature diagnostics, on constructed features with seeded generators."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial
import scipy.stats
import torch

from merdg.diagnostics import (
    DIAGNOSTICS,
    add_gaussian_noise,
    balanced_rows,
    class_mean_features,
    compare_class_means,
    domain_probe_accuracy,
    linear_cka,
    missing_modality_accuracy,
    procrustes_distance,
    rankme,
    unimodal_probe,
)


def gaussian(rows: int, dims: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dims))


def random_rotation(dims: int, seed: int) -> np.ndarray:
    return scipy.stats.special_ortho_group.rvs(dims, random_state=seed)


def test_registry_lists_every_diagnostic() -> None:
    assert set(DIAGNOSTICS) == {
        "rankme", "linear_cka", "procrustes_distance", "domain_probe_accuracy", "compare_class_means",
        "unimodal_probe", "missing_modality_accuracy",
    }
    for name, function in DIAGNOSTICS.items():
        assert function.__doc__, f"diagnostic {name!r} has no docstring"


# RankMe


def test_rankme_equal_rows_is_one() -> None:
    features = np.tile(np.arange(1.0, 9.0), (50, 1))
    assert rankme(features) == pytest.approx(1.0, abs=1e-4)


def test_rankme_rank_one_is_one() -> None:
    rng = np.random.default_rng(0)
    features = np.outer(rng.standard_normal(200), rng.standard_normal(16))
    assert rankme(features) == pytest.approx(1.0, abs=1e-4)


def test_rankme_isotropic_gaussian_near_dimension() -> None:
    dims = 16
    value = rankme(gaussian(20000, dims, seed=1))
    assert dims - 0.1 < value <= dims + 1e-3


def test_rankme_orthogonal_rows_equal_rank() -> None:
    # Singular values all equal: the entropy is log k exactly, up to the eps terms.
    assert rankme(np.eye(5) * 3.0) == pytest.approx(5.0, abs=1e-4)
    assert rankme(np.eye(8)[:, :6] * 2.0) == pytest.approx(6.0, abs=1e-4)


def test_rankme_accepts_torch_and_numpy() -> None:
    features = gaussian(100, 8, seed=2)
    assert rankme(torch.from_numpy(features).float()) == pytest.approx(rankme(features), rel=1e-5)


def test_rankme_rejects_zero_features() -> None:
    with pytest.raises(ValueError, match=r"all-zero features of shape \(4, 3\)"):
        rankme(np.zeros((4, 3)))


def test_rankme_rejects_nan_and_bad_shapes() -> None:
    features = gaussian(10, 3, seed=3)
    features[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        rankme(features)
    with pytest.raises(ValueError, match=r"shape \(N, D\).*\(10,\)"):
        rankme(np.ones(10))
    with pytest.raises(TypeError, match="list"):
        rankme([[1.0, 2.0]])


# Linear CKA


def test_cka_identical_sets_is_one() -> None:
    features = gaussian(300, 20, seed=4)
    assert linear_cka(features, features) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_rotation_and_scale() -> None:
    features = gaussian(300, 20, seed=5)
    transformed = 7.5 * features @ random_rotation(20, seed=6) + 3.0
    assert linear_cka(features, transformed) == pytest.approx(1.0, abs=1e-10)
    other = gaussian(300, 12, seed=7)
    assert linear_cka(features, other @ random_rotation(12, seed=8) * 0.1) == pytest.approx(linear_cka(features, other), abs=1e-10)


def test_cka_symmetric_in_range() -> None:
    x = gaussian(200, 10, seed=9)
    y = x[:, :5] + 0.5 * gaussian(200, 5, seed=10)
    value = linear_cka(x, y)
    assert value == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 < value < 1.0


def test_cka_independent_sets_near_zero() -> None:
    # For independent isotropic features the expected value is about D / N.
    value = linear_cka(gaussian(5000, 8, seed=11), gaussian(5000, 8, seed=12))
    assert 0.0 <= value < 0.02


def test_cka_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(12, 4\)"):
        linear_cka(gaussian(10, 4, seed=0), gaussian(12, 4, seed=1))


def test_cka_rejects_constant_features() -> None:
    with pytest.raises(ValueError, match=r"y of shape \(10, 3\) is constant"):
        linear_cka(gaussian(10, 4, seed=0), np.ones((10, 3)))


# Procrustes


def test_procrustes_transformed_copy_is_zero() -> None:
    features = gaussian(100, 6, seed=13)
    transformed = 0.25 * features @ random_rotation(6, seed=14) - 4.0
    assert procrustes_distance(features, transformed) == pytest.approx(0.0, abs=1e-12)
    reflected = features * np.array([-1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert procrustes_distance(features, reflected) == pytest.approx(0.0, abs=1e-12)


def test_procrustes_matches_scipy() -> None:
    x = gaussian(80, 5, seed=15)
    y = x + 0.7 * gaussian(80, 5, seed=16)
    _, _, expected = scipy.spatial.procrustes(x, y)
    value = procrustes_distance(x, y)
    assert value == pytest.approx(expected, abs=1e-10)
    assert 0.0 < value < 1.0


def test_procrustes_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(10, 5\)"):
        procrustes_distance(gaussian(10, 4, seed=0), gaussian(10, 5, seed=1))
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(9, 4\)"):
        procrustes_distance(gaussian(10, 4, seed=0), gaussian(9, 4, seed=1))


# Domain probe


def test_probe_separable_domains_near_perfect() -> None:
    rng = np.random.default_rng(17)
    domains = np.repeat(["human", "animal", "cartoon"], 100)
    centres = {"human": np.zeros(8), "animal": np.full(8, 6.0), "cartoon": np.r_[np.full(4, -6.0), np.zeros(4)]}
    features = np.stack([centres[domain] for domain in domains]) + rng.standard_normal((300, 8))
    result = domain_probe_accuracy(features, domains, seed=0)
    assert result.accuracy >= 0.97
    assert result.chance == pytest.approx(1 / 3)
    assert result.num_domains == 3
    assert result.num_train + result.num_test == 300


def test_probe_identical_distributions_near_chance() -> None:
    features = gaussian(400, 8, seed=18)
    domains = np.repeat([0, 1], 200)
    result = domain_probe_accuracy(torch.from_numpy(features), torch.from_numpy(domains), seed=0)
    assert result.chance == pytest.approx(0.5)
    assert abs(result.accuracy - result.chance) < 0.15


def test_probe_is_deterministic_for_a_seed() -> None:
    features = gaussian(120, 6, seed=19)
    domains = np.repeat([0, 1, 2], 40)
    assert domain_probe_accuracy(features, domains, seed=3) == domain_probe_accuracy(features, domains, seed=3)


def test_probe_split_is_stratified() -> None:
    features = gaussian(100, 4, seed=20)
    domains = np.array([0] * 80 + [1] * 20)
    result = domain_probe_accuracy(features, domains, test_fraction=0.25, seed=0)
    assert result.num_test == 25
    assert result.chance == pytest.approx(20 / 25)


def test_probe_balance_makes_chance_uniform() -> None:
    rng = np.random.default_rng(26)
    domains = np.array([0] * 90 + [1] * 30 + [2] * 60)
    features = rng.standard_normal((180, 4)) + 5.0 * np.eye(3, 4)[domains]
    result = domain_probe_accuracy(features, domains, balance=True, seed=0)
    assert result.num_train + result.num_test == 90
    assert result.chance == pytest.approx(1 / 3)
    assert result.accuracy >= 0.9


def test_balanced_rows_equal_groups() -> None:
    codes = np.array([2] * 7 + [0] * 3 + [1] * 5)
    rows = balanced_rows(codes, seed=1)
    assert np.bincount(codes[rows]).tolist() == [3, 3, 3]
    assert np.all(np.diff(rows) > 0)
    assert rows.tolist() == balanced_rows(codes, seed=1).tolist()


def test_probe_fits_under_no_grad() -> None:
    features = gaussian(60, 3, seed=27) + np.repeat(np.eye(2, 3) * 6.0, 30, axis=0)
    domains = np.repeat([0, 1], 30)
    with torch.no_grad():
        result = domain_probe_accuracy(features, domains, seed=0)
    assert result.accuracy >= 0.9


def test_probe_rejects_bad_domains() -> None:
    features = gaussian(10, 3, seed=21)
    with pytest.raises(ValueError, match=r"shape \(10,\).*\(9,\)"):
        domain_probe_accuracy(features, np.zeros(9))
    with pytest.raises(ValueError, match="at least 2 domains"):
        domain_probe_accuracy(features, np.zeros(10))
    with pytest.raises(ValueError, match="at least 2 rows"):
        domain_probe_accuracy(features, np.array([0] * 9 + [1]))


# Class means across domains


def test_class_means_average_each_class() -> None:
    features = np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0]])
    classes, means = class_mean_features(features, ["b", "b", "a"])
    assert classes.tolist() == ["a", "b"]
    assert means.numpy().tolist() == [[10.0, 10.0], [2.0, 1.0]]


def test_compare_class_means_aligned_domains() -> None:
    rng = np.random.default_rng(22)
    centres = rng.standard_normal((5, 10)) * 4.0
    labels_x = rng.integers(0, 5, size=300)
    labels_y = rng.integers(0, 4, size=150)
    x = centres[labels_x] + 0.1 * rng.standard_normal((300, 10))
    # The second domain is a rotated, scaled, shifted copy that lacks class 4.
    y = (2.0 * centres[labels_y] + 0.2 * rng.standard_normal((150, 10))) @ random_rotation(10, seed=23) + 1.0
    assert compare_class_means(x, labels_x, y, labels_y) > 0.99
    assert compare_class_means(x, labels_x, y, labels_y, metric="procrustes_distance") < 0.01


def test_compare_class_means_rejects_few_shared() -> None:
    x, y = gaussian(10, 3, seed=24), gaussian(8, 3, seed=25)
    with pytest.raises(ValueError, match="at least 2 classes"):
        compare_class_means(x, [0] * 5 + [1] * 5, y, [1] * 4 + [2] * 4)
    with pytest.raises(ValueError, match="unknown metric"):
        compare_class_means(x, [0] * 5 + [1] * 5, y, [0] * 4 + [1] * 4, metric="cosine")


# Unimodal probe


def class_clusters(labels: np.ndarray, dims: int, separation: float, seed: int) -> np.ndarray:
    """Gaussian rows around one centre per class; centres are ``separation`` times one-hot directions."""
    rng = np.random.default_rng(seed)
    centres = separation * np.eye(int(labels.max()) + 1, dims)
    return centres[labels] + rng.standard_normal((len(labels), dims))


def test_unimodal_probe_separable_classes() -> None:
    train_labels = np.repeat(np.arange(4), 50)
    test_labels = np.repeat(np.arange(4), 25)
    result = unimodal_probe(class_clusters(train_labels, 8, 8.0, seed=30), train_labels,
                            class_clusters(test_labels, 8, 8.0, seed=31), test_labels, seed=0)
    assert result.accuracy >= 0.98
    assert result.train_accuracy >= 0.98
    assert (result.num_train, result.num_test, result.num_classes) == (200, 100, 4)


def test_unimodal_probe_without_signal_near_chance() -> None:
    train_labels = np.repeat(np.arange(2), 200)
    test_labels = np.repeat(np.arange(2), 500)
    result = unimodal_probe(gaussian(400, 8, seed=32), train_labels, gaussian(1000, 8, seed=33), test_labels, seed=0)
    assert abs(result.accuracy - 0.5) < 0.08


def test_unimodal_probe_fails_on_shifted_target() -> None:
    # The class signal of the training rows sits in dimension 0; in the test rows it moved to
    # dimension 1, where the training rows have none, so the head cannot transfer.
    labels = np.repeat(np.arange(2), 200)
    sign = 2.0 * labels - 1.0
    train = gaussian(400, 4, seed=34)
    train[:, 0] += 6.0 * sign
    test = gaussian(400, 4, seed=35)
    test[:, 1] += 6.0 * sign
    result = unimodal_probe(train, labels, test, labels, seed=0)
    assert result.train_accuracy >= 0.98
    assert abs(result.accuracy - 0.5) < 0.1


def test_unimodal_probe_is_seeded_and_keeps_global_rng() -> None:
    labels = np.repeat(np.arange(3), 20)
    features = class_clusters(labels, 5, 1.0, seed=36)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = unimodal_probe(features, labels, features, labels, epochs=5, seed=4)
    assert torch.equal(torch.rand(3), expected_draw)
    assert first == unimodal_probe(features, labels, features, labels, epochs=5, seed=4)


def test_unimodal_probe_counts_num_classes() -> None:
    labels = np.array([0, 1] * 10)
    result = unimodal_probe(gaussian(20, 3, seed=37), labels, gaussian(4, 3, seed=38), [0, 1, 0, 1],
                            num_classes=5, epochs=1)
    assert result.num_classes == 5


def test_unimodal_probe_rejects_bad_input() -> None:
    features = gaussian(10, 3, seed=39)
    labels = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="same width"):
        unimodal_probe(features, labels, gaussian(10, 4, seed=40), labels)
    with pytest.raises(ValueError, match=r"train_labels must have shape \(10,\)"):
        unimodal_probe(features, labels[:9], features, labels)
    with pytest.raises(ValueError, match="class indices"):
        unimodal_probe(features, labels - 1, features, labels)
    with pytest.raises(ValueError, match="num_classes"):
        unimodal_probe(features, labels * 3, features, labels, num_classes=3)


# Missing modality and input noise


def block_classifier(widths: dict[str, int], reads: str, num_classes: int) -> torch.nn.Linear:
    """A linear classifier over concatenated blocks that reads the first ``num_classes`` dims of block ``reads``.

    Its bias favours class 0, so with that block zeroed it predicts class 0 for every row.
    """
    classifier = torch.nn.Linear(sum(widths.values()), num_classes)
    with torch.no_grad():
        classifier.weight.zero_()
        offset = 0
        for name, width in widths.items():
            if name == reads:
                classifier.weight[:, offset:offset + num_classes] = torch.eye(num_classes)
            offset += width
        classifier.bias.zero_()
        classifier.bias[0] = 0.5
    return classifier


def test_missing_modality_zeroes_one_block() -> None:
    labels = torch.tensor([0, 1, 2, 2, 1, 2, 2, 0])
    embeddings = {"video": 10.0 * torch.nn.functional.one_hot(labels, 4).float(), "audio": torch.randn(8, 3)}
    classifier = block_classifier({"video": 4, "audio": 3}, reads="video", num_classes=3)
    assert missing_modality_accuracy(classifier, embeddings, labels, "audio") == 1.0
    # Without video the bias alone decides: class 0 for every row, right for 2 rows of 8.
    assert missing_modality_accuracy(classifier, embeddings, labels, "video") == pytest.approx(2 / 8)
    assert torch.count_nonzero(embeddings["audio"]) == 24


def test_missing_modality_rejects_bad_input() -> None:
    embeddings = {"video": torch.ones(4, 2), "audio": torch.ones(3, 2)}
    classifier = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="'flow' is not among"):
        missing_modality_accuracy(classifier, embeddings, [0, 1, 0, 1], "flow")
    with pytest.raises(ValueError, match="same N"):
        missing_modality_accuracy(classifier, embeddings, [0, 1, 0, 1], "audio")


def test_gaussian_noise_has_requested_std() -> None:
    inputs = {"video": torch.full((4, 3, 8, 16, 16), 2.0), "audio": torch.zeros(4, 1, 64, 64)}
    noisy = add_gaussian_noise(inputs, 0.5, torch.Generator().manual_seed(0))
    for modality, tensor in noisy.items():
        noise = tensor - inputs[modality]
        # Five standard errors of the mean and of the standard deviation of n normal draws.
        n = noise.numel()
        assert noise.mean().item() == pytest.approx(0.0, abs=5 * 0.5 / n**0.5)
        assert noise.std().item() == pytest.approx(0.5, abs=5 * 0.5 / (2 * n) ** 0.5)
    assert torch.equal(inputs["video"], torch.full((4, 3, 8, 16, 16), 2.0))


def test_gaussian_noise_is_seeded() -> None:
    inputs = {"flow": torch.zeros(2, 2, 4, 8, 8)}
    first = add_gaussian_noise(inputs, 1.0, torch.Generator().manual_seed(7))
    second = add_gaussian_noise(inputs, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(first["flow"], second["flow"])
    unchanged = add_gaussian_noise(inputs, 0.0, torch.Generator().manual_seed(7))
    assert torch.equal(unchanged["flow"], inputs["flow"])
    with pytest.raises(ValueError, match="noise std must be >= 0, got -1"):
        add_gaussian_noise(inputs, -1.0, torch.Generator())
