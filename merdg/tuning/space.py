"""Search spaces for MER's hyperparameters, declared as YAML data and validated on load.

A space file has two keys::

    lambda: {distribution: log_uniform, low: 0.01, high: 10.0}
    estimators:
      logdet:
        gamma: {distribution: uniform, low: 0.5, high: 2.0}
      koleo: {}

``lambda`` is MER's weight. ``estimators`` lists the entropy estimators to choose from, each with
a distribution per own parameter, and an estimator listed with ``{}`` uses its defaults. A trial
samples lambda, then an estimator, then only that estimator's parameters, so a sampled trial
config looks like ``{"lambda": 0.3, "estimator": "logdet", "logdet": {"gamma": 1.2}}``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from merdg.config import MODALITIES, NORMALIZATIONS, MERConfig
from merdg.entropy import ESTIMATORS, build_estimator


class SearchSpaceError(ValueError):
    """An invalid search-space file; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Distribution:
    """One parameter's search distribution."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    def suggest(self, trial, name: str) -> Any:
        """Sample the parameter with an ``optuna.Trial``."""
        if self.kind == "log_uniform":
            return trial.suggest_float(name, self.low, self.high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(name, self.low, self.high)
        if self.kind == "int_uniform":
            return trial.suggest_int(name, int(self.low), int(self.high))
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        return self.value

    def candidates(self) -> tuple[Any, ...]:
        """Return the values that bound the distribution: its ends, choices or constant."""
        if self.kind in ("log_uniform", "uniform", "int_uniform"):
            return (self.low, self.high)
        if self.kind == "categorical":
            return self.choices
        return (self.value,)

    def sample_midpoint(self) -> Any:
        """Return a deterministic value inside the distribution (for tests and defaults)."""
        if self.kind == "log_uniform":
            return math.sqrt(self.low * self.high)
        if self.kind in ("uniform", "int_uniform"):
            middle = (self.low + self.high) / 2
            return int(middle) if self.kind == "int_uniform" else middle
        if self.kind == "categorical":
            return self.choices[0]
        return self.value


DISTRIBUTION_KEYS = {
    "log_uniform": {"low", "high"},
    "uniform": {"low", "high"},
    "int_uniform": {"low", "high"},
    "categorical": {"choices"},
    "constant": {"value"},
}


@dataclass(frozen=True)
class SearchSpace:
    """MER's search space: lambda's distribution and each estimator's parameter distributions."""

    path: str
    weight: Distribution
    estimators: dict[str, dict[str, Distribution]]
    normalize: Distribution | None = None
    modality_weights: dict[str, Distribution] | None = None


def _parse_distribution(raw: Any, where: str) -> Distribution:
    if not isinstance(raw, dict) or "distribution" not in raw:
        raise SearchSpaceError(
            f"{where}: expected a mapping with 'distribution' (one of {sorted(DISTRIBUTION_KEYS)}), got {raw!r}"
        )
    kind = raw["distribution"]
    if kind not in DISTRIBUTION_KEYS:
        raise SearchSpaceError(f"{where}: unknown distribution {kind!r}; use one of {sorted(DISTRIBUTION_KEYS)}")
    keys = set(raw) - {"distribution"}
    if keys != DISTRIBUTION_KEYS[kind]:
        raise SearchSpaceError(
            f"{where}: distribution {kind!r} takes keys {sorted(DISTRIBUTION_KEYS[kind])}, got {sorted(keys)}"
        )
    if kind == "categorical":
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        return Distribution(kind, choices=tuple(choices))
    if kind == "constant":
        return Distribution(kind, value=raw["value"])
    low, high = raw["low"], raw["high"]
    if not all(isinstance(bound, (int, float)) and not isinstance(bound, bool) for bound in (low, high)):
        raise SearchSpaceError(f"{where}: 'low' and 'high' must be numbers, got low={low!r}, high={high!r}")
    if not low < high:
        raise SearchSpaceError(f"{where}: 'low' ({low}) must be smaller than 'high' ({high})")
    if kind == "log_uniform" and low <= 0:
        raise SearchSpaceError(f"{where}: a log_uniform 'low' must be > 0, got {low}")
    return Distribution(kind, low=float(low), high=float(high))


def _estimator_parameters(name: str) -> set[str]:
    signature = inspect.signature(ESTIMATORS[name].__init__)
    return {parameter for parameter in signature.parameters if parameter != "self"}


def _parse_estimators(raw: Any, path: str) -> dict[str, dict[str, Distribution]]:
    if not isinstance(raw, dict) or not raw:
        raise SearchSpaceError(f"{path}: estimators: expected a non-empty mapping of estimator name to parameters")
    estimators: dict[str, dict[str, Distribution]] = {}
    for name, params in raw.items():
        if name not in ESTIMATORS:
            raise SearchSpaceError(f"{path}: estimators: unknown estimator {name!r}; registered: {sorted(ESTIMATORS)}")
        params = params or {}
        if not isinstance(params, dict):
            raise SearchSpaceError(f"{path}: estimators.{name}: expected a mapping of parameter distributions")
        accepted = _estimator_parameters(name)
        for param in params:
            if param not in accepted:
                raise SearchSpaceError(
                    f"{path}: estimators.{name}.{param}: not a parameter of {name!r}; it takes {sorted(accepted)}"
                )
        estimators[name] = {
            param: _parse_distribution(dist, f"{path}: estimators.{name}.{param}") for param, dist in params.items()
        }
        for param, distribution in estimators[name].items():
            _check_estimator_accepts(name, param, distribution, path)
    return estimators


def _check_estimator_accepts(name: str, param: str, distribution: Distribution, path: str) -> None:
    """Build the estimator at each end or choice of a parameter's distribution, so a bad range fails on load."""
    for value in distribution.candidates():
        try:
            build_estimator(name, **{param: value})
        except (TypeError, ValueError) as error:
            raise SearchSpaceError(f"{path}: estimators.{name}.{param}: {name!r} rejects {value!r}: {error}") from None


def _check_non_negative(distribution: Distribution, where: str) -> None:
    for value in distribution.candidates():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SearchSpaceError(f"{where}: values must be numbers >= 0, got {value!r}")


def _parse_normalize(raw: Any, path: str) -> Distribution:
    distribution = _parse_distribution(raw, f"{path}: normalize")
    values = distribution.choices if distribution.kind == "categorical" else (distribution.value,)
    if distribution.kind not in ("categorical", "constant") or any(v not in NORMALIZATIONS for v in values):
        raise SearchSpaceError(
            f"{path}: normalize: expected a categorical or constant distribution over {list(NORMALIZATIONS)}, got {raw!r}"
        )
    return distribution


def _parse_modality_weights(raw: Any, path: str) -> dict[str, Distribution]:
    if not isinstance(raw, dict) or not raw:
        raise SearchSpaceError(f"{path}: modality_weights: expected a mapping of modality name to distribution")
    weights = {}
    for modality, dist in raw.items():
        if modality not in MODALITIES:
            raise SearchSpaceError(f"{path}: modality_weights: unknown modality {modality!r}; choose from {list(MODALITIES)}")
        distribution = _parse_distribution(dist, f"{path}: modality_weights.{modality}")
        _check_non_negative(distribution, f"{path}: modality_weights.{modality}")
        weights[modality] = distribution
    return weights


def parse_space(raw: Any, path: str = "<search space>") -> SearchSpace:
    """Validate a parsed YAML mapping and return the search space it declares."""
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{path}: expected a mapping with keys 'lambda' and 'estimators', got {type(raw).__name__}")
    allowed = {"lambda", "estimators", "normalize", "modality_weights"}
    unknown = set(raw) - allowed
    if unknown:
        raise SearchSpaceError(f"{path}: unknown keys {sorted(unknown)}; a space has only {sorted(allowed)}")
    for key in ("lambda", "estimators"):
        if key not in raw:
            raise SearchSpaceError(f"{path}: missing key {key!r}")

    weight = _parse_distribution(raw["lambda"], f"{path}: lambda")
    _check_non_negative(weight, f"{path}: lambda")
    estimators = _parse_estimators(raw["estimators"], path)
    normalize = _parse_normalize(raw["normalize"], path) if "normalize" in raw else None
    modality_weights = _parse_modality_weights(raw["modality_weights"], path) if "modality_weights" in raw else None
    return SearchSpace(path=path, weight=weight, estimators=estimators, normalize=normalize,
                       modality_weights=modality_weights)


def load_space(path: Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"search space file not found: {path} (set --tune.space to a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{path}: not valid YAML: {error}") from error
    return parse_space(raw, str(path))


def suggest_mer_params(trial, space: SearchSpace) -> dict[str, Any]:
    """Sample lambda, an estimator and that estimator's parameters (an Optuna define-by-run space).

    Also samples the normalisation and modality weights when the space declares them. Returns
    the constant settings, which are not Optuna parameters; Ray's ``OptunaSearch`` merges them
    into the trial config. Module-level so that ``functools.partial(suggest_mer_params,
    space=...)`` pickles for Ray.
    """
    chosen: list[tuple[str, Distribution]] = [("lambda", space.weight)]
    estimator = trial.suggest_categorical("estimator", list(space.estimators))
    chosen += [(f"{estimator}/{param}", dist) for param, dist in space.estimators[estimator].items()]
    if space.normalize is not None:
        chosen.append(("normalize", space.normalize))
    chosen += [(f"modality_weights/{m}", dist) for m, dist in (space.modality_weights or {}).items()]
    constants = {}
    for name, distribution in chosen:
        value = distribution.suggest(trial, name)
        if distribution.kind == "constant":
            constants[name] = value
    return constants


def mer_config_from_trial(config: dict[str, Any], base: MERConfig | None = None) -> MERConfig:
    """Turn a sampled trial config (see the module docstring) into a ``MERConfig``.

    Fields the trial did not sample (normalisation, modality weights, scope) come from ``base``.
    Constant distributions are not Optuna parameters, so a space's constants are read here too.
    """
    base = base or MERConfig()
    estimator = config["estimator"]
    weights = dict(base.modality_weights)
    weights.update({name: float(value) for name, value in (config.get("modality_weights") or {}).items()})
    return MERConfig(
        weight=float(config["lambda"]),
        estimator=estimator,
        estimator_params=dict(config.get(estimator, {})),
        normalize=str(config.get("normalize", base.normalize)),
        modality_weights=weights,
        scope=base.scope,
    )
