"""Search spaces: every shipped space loads, samples with Optuna, and builds its estimators."""

import functools
from pathlib import Path

import optuna
import pytest
import yaml
from ray.tune.utils.util import unflatten_dict

from merdg.config import MERConfig

from merdg.entropy import build_estimator
from merdg.tuning.space import SearchSpaceError, load_space, mer_config_from_trial, parse_space, suggest_mer_params

SPACES = sorted((Path(__file__).resolve().parents[2] / "tune_spaces").glob("*.yaml"))


def test_spaces_are_shipped():
    assert SPACES, "tune_spaces/ holds no YAML file"


def sample_trial_config(study: optuna.Study, space) -> tuple[optuna.trial.Trial, dict]:
    """Sample one trial config the way Ray's OptunaSearch builds it from a define-by-run space."""
    trial = study.ask()
    constants = suggest_mer_params(trial, space)
    return trial, unflatten_dict({**trial.params, **constants})


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_builds_every_estimator(path):
    space = load_space(path)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial, config = sample_trial_config(study, space)
        mer = mer_config_from_trial(config)
        estimator = build_estimator(mer.estimator, **mer.estimator_params)
        assert estimator.name == mer.estimator
        if space.weight.kind in ("categorical", "constant"):
            assert mer.weight in space.weight.candidates()
        else:
            assert space.weight.low <= mer.weight <= space.weight.high
        assert set(mer.estimator_params) == set(space.estimators[mer.estimator])
        seen.add(mer.estimator)
        study.tell(trial, 0.0)
    assert seen == set(space.estimators)


def test_normalize_weights_and_constants_reach_the_config():
    space = parse_space({
        "lambda": {"distribution": "constant", "value": 3.0},
        "estimators": {"logdet": {"gamma": {"distribution": "constant", "value": 1.5}}},
        "normalize": {"distribution": "categorical", "choices": ["l2", "standardize"]},
        "modality_weights": {"audio": {"distribution": "uniform", "low": 0.5, "high": 2.0}},
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    _, config = sample_trial_config(study, space)
    mer = mer_config_from_trial(config, base=MERConfig(scope="global", modality_weights={"video": 0.5}))
    assert mer.weight == 3.0
    assert mer.estimator_params == {"gamma": 1.5}
    assert mer.normalize in ("l2", "standardize")
    assert 0.5 <= mer.modality_weights["audio"] <= 2.0
    assert mer.modality_weights["video"] == 0.5
    assert mer.scope == "global"


def test_space_function_pickles_for_ray():
    import pickle

    space = load_space(SPACES[0])
    function = functools.partial(suggest_mer_params, space=space)
    assert pickle.loads(pickle.dumps(function)).keywords["space"] == space


BAD_SPACES = [
    ({"lambda": {"distribution": "log_uniform", "low": 0, "high": 1}, "estimators": {"logdet": {}}}, "must be > 0"),
    ({"lambda": {"distribution": "uniform", "low": 2, "high": 1}, "estimators": {"logdet": {}}}, "smaller than"),
    ({"lambda": {"distribution": "normal", "low": 0, "high": 1}, "estimators": {"logdet": {}}}, "unknown distribution"),
    ({"lambda": {"distribution": "constant", "value": 1.0}, "estimators": {"entropy9": {}}}, "unknown estimator 'entropy9'"),
    ({"lambda": {"distribution": "constant", "value": 1.0},
      "estimators": {"koleo": {"t": {"distribution": "constant", "value": 2}}}}, "not a parameter of 'koleo'"),
    ({"lambda": {"distribution": "constant", "value": 1.0}}, "missing key 'estimators'"),
    ({"lambda": {"distribution": "constant", "value": 1.0}, "estimators": {}, "seed": 3}, "unknown keys"),
    ({"lambda": {"distribution": "uniform", "low": 0.1}, "estimators": {"logdet": {}}}, "takes keys"),
    ({"lambda": {"distribution": "constant", "value": 1.0}, "estimators": {"logdet": {}},
      "normalize": {"distribution": "categorical", "choices": ["l2", "whiten"]}}, "normalize: expected"),
    ({"lambda": {"distribution": "constant", "value": 1.0}, "estimators": {"logdet": {}},
      "modality_weights": {"smell": {"distribution": "constant", "value": 1.0}}}, "unknown modality 'smell'"),
    ({"lambda": {"distribution": "constant", "value": 1.0}, "estimators": {"logdet": {}},
      "modality_weights": {"audio": {"distribution": "uniform", "low": -1.0, "high": 1.0}}}, "must be numbers >= 0"),
    ({"lambda": {"distribution": "constant", "value": -1.0}, "estimators": {"logdet": {}}}, "must be numbers >= 0"),
    ({"lambda": {"distribution": "constant", "value": "abc"}, "estimators": {"logdet": {}}}, "must be numbers >= 0"),
    ({"lambda": {"distribution": "constant", "value": 1.0},
      "estimators": {"koleo": {"eps": {"distribution": "constant", "value": -5}}}}, "'koleo' rejects -5"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_SPACES)
def test_invalid_spaces_raise_with_file_and_key(raw, message, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SearchSpaceError, match=message) as error:
        load_space(path)
    assert str(path) in str(error.value)


def test_missing_and_malformed_files_raise(tmp_path):
    with pytest.raises(SearchSpaceError, match="not found"):
        load_space(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lambda: [unclosed\n")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_space(broken)
    with pytest.raises(SearchSpaceError, match="expected a mapping"):
        parse_space(["lambda"], "inline")


def test_default_space_offers_every_registered_estimator():
    from merdg.entropy import ESTIMATORS

    default = load_space(Path(__file__).resolve().parents[2] / "tune_spaces" / "default.yaml")
    assert set(default.estimators) == set(ESTIMATORS)
