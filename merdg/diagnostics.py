"""Feature diagnostics for fusion overfitting: effective rank, alignment and domain probes.

MER-DG's claim concerns the encoders' features, so these functions measure feature matrices of
shape (N, D) directly: N samples (rows) by D feature dimensions. They accept torch tensors or
NumPy arrays, compute on the CPU, and return Python floats (or a small dataclass). The closed-form
measures run in float64 without autograd. The two probes fit a model with autograd: the domain
probe in float64, the unimodal MLP probe in float32, as such heads are usually trained. They
import neither Ray nor MLflow.

Paired rows: ``linear_cka`` and ``procrustes_distance`` compare two representations of the
same N samples, row i of one with row i of the other (for example two encoders, or one encoder
before and after training, on the same clips). Features of two different domains have no such
pairing and usually different row counts. To compare domains, ``compare_class_means`` reduces
each domain to the mean feature of every class present in both domains and compares those
(C, D) matrices, row c to row c.

Robustness: ``missing_modality_accuracy`` scores a fusion classifier with one modality's
embedding replaced by zeros, and ``add_gaussian_noise`` perturbs model inputs for a noisy
evaluation pass.

Every diagnostic is registered in ``DIAGNOSTICS`` under its name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

FeatureArray = torch.Tensor | np.ndarray
"""Features of shape (N, D) as a torch tensor or a NumPy array of real numbers."""

DIAGNOSTICS: dict[str, Callable[..., Any]] = {}
"""Registered diagnostics by name; registering one puts it into the tests' registry check."""

RANKME_EPS = 1e-7
"""The epsilon added to each normalised singular value in RankMe (Garrido et al., 2023)."""
# NOTE: 1e-7 matches published RankMe implementations; it was not checked against the paper's
# own text, so confirm it before comparing values with another code base.

_Function = TypeVar("_Function", bound=Callable[..., Any])


def register_diagnostic(name: str) -> Callable[[_Function], _Function]:
    """Register a diagnostic function under ``name`` (a function decorator)."""

    def decorator(function: _Function) -> _Function:
        if name in DIAGNOSTICS and DIAGNOSTICS[name] is not function:
            logger.warning("diagnostic %r registered twice; %s replaces %s", name, function, DIAGNOSTICS[name])
        DIAGNOSTICS[name] = function
        return function

    return decorator


def as_float64(features: FeatureArray, name: str = "features") -> torch.Tensor:
    """Convert features of shape (N, D) to a detached float64 CPU tensor, checking shape and values.

    Raises ``TypeError`` for other input types and ``ValueError`` for a shape other than (N, D)
    with N >= 1 and D >= 1, or for NaN or infinite values.
    """
    if isinstance(features, torch.Tensor):
        tensor = features.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(features, np.ndarray):
        if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
            raise TypeError(f"{name} must contain real numbers, got a NumPy array of dtype {features.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, D), got {type(features).__name__}")

    if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1 and D >= 1, got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} of shape {tuple(tensor.shape)} contains NaN or infinite values; drop or fix those rows first")
    return tensor


def _check_paired(x: torch.Tensor, y: torch.Tensor, *, same_width: bool) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must contain the same samples row by row, got x of shape {tuple(x.shape)} and y of "
            f"shape {tuple(y.shape)}; to compare two domains, use compare_class_means"
        )
    if same_width and x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}; "
            "zero-pad the narrower one or project both to a common width"
        )
    if x.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 rows to centre, got shape {tuple(x.shape)}")


@register_diagnostic("rankme")
@torch.no_grad()
def rankme(features: FeatureArray, eps: float = RANKME_EPS) -> float:
    """Compute RankMe, the effective rank of a feature matrix (Garrido et al., ICML 2023).

    With sigma the singular values of the uncentred matrix Z (N, D) and
    p_k = sigma_k / ||sigma||_1 + eps, RankMe(Z) = exp(-sum_k p_k log p_k).
    Unitless, in [1, min(N, D)] up to terms of order eps * min(N, D) * log(1 / eps): about 1
    when all rows are equal or Z has rank 1, about min(N, D) when all singular values are equal.
    Raises ``ValueError`` when Z is all zeros, because its spectrum has no distribution.
    """
    z = as_float64(features)
    singular_values = torch.linalg.svdvals(z)
    total = singular_values.sum()
    if total <= 0:
        raise ValueError(f"RankMe is undefined for all-zero features of shape {tuple(z.shape)}")
    p = singular_values / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


@register_diagnostic("linear_cka")
@torch.no_grad()
def linear_cka(x: FeatureArray, y: FeatureArray) -> float:
    """Compute linear centred kernel alignment between two representations of the same samples.

    With X (N, D1) and Y (N, D2) centred per column,
    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) (Kornblith et al., "Similarity of Neural
    Network Representations Revisited", ICML 2019). Unitless, in [0, 1]: 1 when Y is an orthogonal transform of X times a scalar plus
    a translation; near 0 for independent features when N >> D1, D2. Row i of X and row i of Y
    must be the same sample. Raises ``ValueError`` for different row counts or a constant input.
    """
    x64 = as_float64(x, "x")
    y64 = as_float64(y, "y")
    _check_paired(x64, y64, same_width=False)
    xc = x64 - x64.mean(dim=0)
    yc = y64 - y64.mean(dim=0)

    # The (D, D) Gram products give the same value as the (N, N) kernel form, at lower cost when N > D.
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    norm_x = torch.linalg.matrix_norm(xc.T @ xc)
    norm_y = torch.linalg.matrix_norm(yc.T @ yc)
    for name, norm, shape in (("x", norm_x, x64.shape), ("y", norm_y, y64.shape)):
        if norm <= 0:
            raise ValueError(f"linear CKA is undefined because {name} of shape {tuple(shape)} is constant across rows; drop it or compare other features")
    return float(cross / (norm_x * norm_y))


@register_diagnostic("procrustes_distance")
@torch.no_grad()
def procrustes_distance(x: FeatureArray, y: FeatureArray) -> float:
    """Compute the orthogonal Procrustes disparity between two representations of the same samples.

    Follows ``scipy.spatial.procrustes`` (SciPy 1.17): centre each matrix per column, scale it to
    unit Frobenius norm, find the orthogonal matrix R (reflections allowed) and scale s that
    minimise ||X - s Y R||_F^2, and return that minimum, which equals 1 - (sum of the singular
    values of X^T Y)^2. Unitless, in [0, 1]: 0 when Y equals X up to rotation, reflection,
    isotropic scaling and translation. X and Y must have the same shape (N, D) and the same
    sample in each row. Raises ``ValueError`` for mismatched shapes or a constant input.
    """
    x64 = as_float64(x, "x")
    y64 = as_float64(y, "y")
    _check_paired(x64, y64, same_width=True)

    normalised = []
    for name, matrix in (("x", x64), ("y", y64)):
        centred = matrix - matrix.mean(dim=0)
        norm = torch.linalg.matrix_norm(centred)
        if norm <= 0:
            raise ValueError(f"Procrustes disparity is undefined because {name} of shape {tuple(matrix.shape)} is constant across rows; drop it or compare other features")
        normalised.append(centred / norm)

    nuclear = torch.linalg.svdvals(normalised[0].T @ normalised[1]).sum()
    # Rounding can push 1 - nuclear^2 slightly below 0 for identical inputs.
    return float(torch.clamp(1.0 - nuclear**2, min=0.0))


@dataclass(frozen=True)
class DomainProbeResult:
    """Held-out accuracy of a linear domain probe, with the accuracy a constant guess gets."""

    accuracy: float
    """Fraction (0 to 1) of held-out rows whose domain the probe predicts correctly."""
    chance: float
    """Fraction (0 to 1) of held-out rows in the most frequent domain: a constant guess's accuracy."""
    num_train: int
    num_test: int
    num_domains: int


def balanced_rows(codes: np.ndarray, seed: int) -> np.ndarray:
    """Return sorted row indices that keep an equal, seeded random subset of every group.

    ``codes`` contains one group code per row, shape (N,). Every group keeps as many rows as the
    smallest group has, so a constant guess scores 1 / (number of groups).
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(codes == code) for code in np.unique(codes)]
    size = min(len(rows) for rows in groups)
    return np.sort(np.concatenate([rng.choice(rows, size=size, replace=False) for rows in groups]))


def _stratified_split(codes: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices per domain, rounding each domain's test count and keeping 1 row on each side."""
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for code in np.unique(codes):
        rows = rng.permutation(np.flatnonzero(codes == code))
        num_test = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
        test_parts.append(rows[:num_test])
        train_parts.append(rows[num_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


@register_diagnostic("domain_probe_accuracy")
def domain_probe_accuracy(
    features: FeatureArray,
    domains: FeatureArray | list[Any],
    *,
    test_fraction: float = 0.3,
    steps: int = 200,
    weight_decay: float = 1e-4,
    balance: bool = False,
    seed: int = 0,
) -> DomainProbeResult:
    """Measure how well a linear probe predicts each row's domain from its features.

    With ``balance``, first keeps a seeded random subset of every domain as large as the smallest
    domain (``balanced_rows``), so that chance is 1 / (number of domains). Then splits the rows
    per domain (stratified, seeded by ``seed``) into a train and a held-out part
    with ``test_fraction`` of each domain held out, standardises features with the train part's
    mean and standard deviation, and fits multinomial logistic regression (softmax cross-entropy
    plus ``weight_decay`` * ||W||^2) with ``steps`` full-batch L-BFGS iterations in float64.
    Returns the held-out accuracy in [0, 1] and the chance level, the held-out share of the most
    frequent domain. A probe well above chance means the features encode the domain, which
    MER-DG reports as a sign of fusion overfitting. ``domains`` contains one label per row (any
    hashable values, as a list, array or tensor of shape (N,)); each domain needs at least 2 rows.
    """
    x = as_float64(features)
    labels = domains.detach().cpu().numpy() if isinstance(domains, torch.Tensor) else np.asarray(domains)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"domains must have shape ({x.shape[0]},) to match features of shape {tuple(x.shape)}, got {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")

    names, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    if len(names) < 2:
        raise ValueError(f"the domain probe needs at least 2 domains, got {names.tolist()}")
    if counts.min() < 2:
        raise ValueError(f"every domain needs at least 2 rows to split, got counts {dict(zip(names.tolist(), counts.tolist()))}")
    if balance:
        kept = balanced_rows(codes, seed)
        x, codes = x[torch.from_numpy(kept)], codes[kept]

    train_rows, test_rows = _stratified_split(codes, test_fraction, seed)
    targets = torch.from_numpy(codes)
    mean = x[train_rows].mean(dim=0)
    std = x[train_rows].std(dim=0, correction=0).clamp_min(1e-12)
    standardised = (x - mean) / std

    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(x.shape[1], len(names), generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")
    train_x, train_y = standardised[train_rows], targets[train_rows]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = train_x @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, train_y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    # Callers may run under torch.no_grad (an evaluation loop), but the fit needs gradients.
    with torch.enable_grad():
        optimizer.step(closure)

    with torch.no_grad():
        predictions = (standardised[test_rows] @ weight + bias).argmax(dim=1)
    test_targets = targets[test_rows]
    accuracy = float((predictions == test_targets).double().mean())
    chance = float(np.bincount(codes[test_rows]).max() / len(test_rows))
    return DomainProbeResult(accuracy, chance, len(train_rows), len(test_rows), len(names))


def class_mean_features(features: FeatureArray, labels: FeatureArray | list[Any]) -> tuple[np.ndarray, torch.Tensor]:
    """Average the feature rows of each class; return the sorted class labels and the (C, D) means."""
    x = as_float64(features)
    label_array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if label_array.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match features of shape {tuple(x.shape)}, got {label_array.shape}")
    classes, codes = np.unique(label_array, return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=torch.float64).index_add_(0, torch.from_numpy(codes), x)
    counts = torch.from_numpy(np.bincount(codes)).to(torch.float64)
    return classes, sums / counts[:, None]


@register_diagnostic("compare_class_means")
def compare_class_means(
    x: FeatureArray,
    labels_x: FeatureArray | list[Any],
    y: FeatureArray,
    labels_y: FeatureArray | list[Any],
    metric: str = "linear_cka",
) -> float:
    """Compare two domains' features through the mean feature of each class present in both.

    CKA and Procrustes need paired rows, which two domains do not have. This reduces each domain
    to a (C, D) matrix of per-class means over the C classes in both label sets (sorted, so row
    c is the same class in both) and applies ``metric`` ("linear_cka" or "procrustes_distance")
    to the two matrices. The result is alignment of class centroids across domains, in that
    metric's range. Needs at least 2 shared classes, because both metrics centre the rows.
    Raises ``ValueError`` for another metric or fewer shared classes.
    """
    metrics: dict[str, Callable[[FeatureArray, FeatureArray], float]] = {
        "linear_cka": linear_cka,
        "procrustes_distance": procrustes_distance,
    }
    if metric not in metrics:
        raise ValueError(f"unknown metric {metric!r} for compare_class_means; expected one of {sorted(metrics)}")

    classes_x, means_x = class_mean_features(x, labels_x)
    classes_y, means_y = class_mean_features(y, labels_y)
    shared = np.intersect1d(classes_x, classes_y)
    if len(shared) < 2:
        raise ValueError(
            f"compare_class_means needs at least 2 classes present in both domains, got x classes "
            f"{classes_x.tolist()} and y classes {classes_y.tolist()}"
        )
    rows_x = torch.from_numpy(np.searchsorted(classes_x, shared))
    rows_y = torch.from_numpy(np.searchsorted(classes_y, shared))
    return metrics[metric](means_x[rows_x], means_y[rows_y])


@dataclass(frozen=True)
class UnimodalProbeResult:
    """Accuracy of an MLP head trained on one modality's frozen features."""

    accuracy: float
    """Fraction (0 to 1) of test rows whose class the trained head predicts correctly."""
    train_accuracy: float
    """Fraction (0 to 1) of training rows it predicts correctly after training."""
    num_train: int
    num_test: int
    num_classes: int


UNIMODAL_PROBE_HIDDEN = 512
"""Hidden width of the unimodal probe head, Linear(D, 512)-ReLU-Dropout(0.3)-Linear(512, C) (MER-DG)."""


def _class_indices(labels: FeatureArray | list[Any], rows: int, name: str) -> torch.Tensor:
    """Convert labels of shape (rows,) to an int64 tensor, checking that they are whole numbers >= 0."""
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},) to match its features, got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or (array.size and (np.any(array < 0) or np.any(array != np.round(array)))):
        raise ValueError(f"{name} must be class indices (whole numbers >= 0), got values such as {array[:5].tolist()}")
    return torch.from_numpy(array.astype(np.int64))


@register_diagnostic("unimodal_probe")
def unimodal_probe(
    train_features: FeatureArray,
    train_labels: FeatureArray | list[Any],
    test_features: FeatureArray,
    test_labels: FeatureArray | list[Any],
    *,
    num_classes: int | None = None,
    hidden_dim: int = UNIMODAL_PROBE_HIDDEN,
    dropout: float = 0.3,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    epochs: int = 25,
    batch_size: int = 256,
    seed: int = 0,
) -> UnimodalProbeResult:
    """Train a fresh MLP head on one modality's frozen features and measure its accuracy on other rows.

    MER-DG's stand-alone encoder test: Linear(D, hidden_dim)-ReLU-Dropout(dropout)-
    Linear(hidden_dim, C), trained with Adam (``lr``, L2 ``weight_decay``) and cross-entropy
    for ``epochs`` passes over the training rows in shuffled batches of ``batch_size``, in
    float32 on the CPU. The defaults are the MER-DG protocol. Train on source-domain features and
    test on target-domain features to measure how well one encoder alone generalizes. Labels are
    class indices in [0, C), with C = ``num_classes`` or else 1 + the largest label of either
    set. Initialisation, shuffling and dropout draw from ``seed`` alone, and the global torch
    random state is left unchanged. Raises ``ValueError`` for mismatched shapes, feature widths
    or labels out of range.
    """
    x_train = as_float64(train_features, "train_features").float()
    x_test = as_float64(test_features, "test_features").float()
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train_features and test_features must have the same width, got {tuple(x_train.shape)} "
                         f"and {tuple(x_test.shape)}")
    y_train = _class_indices(train_labels, x_train.shape[0], "train_labels")
    y_test = _class_indices(test_labels, x_test.shape[0], "test_labels")
    largest = int(max(y_train.max(), y_test.max()))
    classes = largest + 1 if num_classes is None else num_classes
    if classes < 2 or largest >= classes:
        raise ValueError(f"num_classes must be at least 2 and above every label, got {classes} for labels up to {largest}")
    for name, value in (("hidden_dim", hidden_dim), ("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        # Dropout draws from the global generator, so it is seeded inside a forked random state.
        torch.manual_seed(seed)
        head = nn.Sequential(
            nn.Linear(x_train.shape[1], hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, classes),
        )
        optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        head.train()
        for _ in range(epochs):
            order = torch.randperm(x_train.shape[0], generator=generator)
            for start in range(0, x_train.shape[0], batch_size):
                rows = order[start:start + batch_size]
                loss = nn.functional.cross_entropy(head(x_train[rows]), y_train[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    head.eval()
    with torch.no_grad():
        accuracy = float((head(x_test).argmax(dim=1) == y_test).double().mean())
        train_accuracy = float((head(x_train).argmax(dim=1) == y_train).double().mean())
    return UnimodalProbeResult(accuracy, train_accuracy, x_train.shape[0], x_test.shape[0], classes)


@register_diagnostic("missing_modality_accuracy")
@torch.no_grad()
def missing_modality_accuracy(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    embeddings: Mapping[str, torch.Tensor],
    labels: FeatureArray | list[Any],
    missing: str,
) -> float:
    """Measure a fusion classifier's accuracy when one modality is missing, as zeros of its embedding.

    ``embeddings`` maps each modality, in the classifier's concatenation order, to its embeddings
    of shape (N, D_m), all in the classifier's dtype and on its device. The ``missing``
    modality's block is set to zeros, the blocks are concatenated to (N, sum of D_m), and
    ``classifier`` maps them to logits (N, C). Returns the fraction (0 to 1) of rows whose argmax
    equals ``labels`` (class indices, shape (N,)). Zeros are the usual stand-in for a missing
    modality. They equal the training mean only for centred embeddings, so a classifier can also
    lose accuracy because the zeros lie far from the embeddings it saw.
    """
    if missing not in embeddings:
        raise ValueError(f"missing modality {missing!r} is not among the embeddings' modalities {list(embeddings)}")
    rows = {tensor.shape[0] for tensor in embeddings.values()}
    if len(rows) != 1 or any(tensor.dim() != 2 for tensor in embeddings.values()):
        raise ValueError(f"embeddings must all have shape (N, D_m) with the same N, got "
                         f"{ {name: tuple(tensor.shape) for name, tensor in embeddings.items()} }")
    count = rows.pop()
    if count == 0:
        raise ValueError("missing_modality_accuracy needs at least one row")
    targets = _class_indices(labels, count, "labels")
    blocks = [torch.zeros_like(tensor) if name == missing else tensor for name, tensor in embeddings.items()]
    predictions = classifier(torch.cat(blocks, dim=1)).argmax(dim=1).cpu()
    return float((predictions == targets).double().mean())


def add_gaussian_noise(inputs: Mapping[str, torch.Tensor], std: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Return a copy of model inputs with independent Gaussian noise of standard deviation ``std`` added.

    Every modality's tensor gets noise N(0, std^2) on every element, in the units of that tensor
    (for merdg's inputs: ImageNet-standardised video, (x - 128) / 128 flow, z-scored log
    spectrograms). The noise is drawn on the CPU from ``generator``, so that a seeded generator
    gives the same noise on every device, and then moved to each tensor's device. The inputs are
    left unchanged. Raises ``ValueError`` for a negative ``std``.
    """
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    noisy = {}
    for modality, tensor in inputs.items():
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        noisy[modality] = tensor + std * noise.to(device=tensor.device, dtype=tensor.dtype)
    return noisy


__all__ = [
    "DIAGNOSTICS",
    "DomainProbeResult",
    "FeatureArray",
    "RANKME_EPS",
    "UNIMODAL_PROBE_HIDDEN",
    "UnimodalProbeResult",
    "add_gaussian_noise",
    "as_float64",
    "balanced_rows",
    "class_mean_features",
    "compare_class_means",
    "domain_probe_accuracy",
    "linear_cka",
    "missing_modality_accuracy",
    "procrustes_distance",
    "rankme",
    "register_diagnostic",
    "unimodal_probe",
]
