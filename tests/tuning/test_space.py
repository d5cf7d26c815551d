"""Search spaces: every shipped space loads, samples with Optuna, and builds its estimators."""

import functools
from pathlib import Path

import optuna
import pytest
import yaml

from merdg.entropy import build_estimator
from merdg.tuning.space import SearchSpaceError, load_space, mer_config_from_trial, parse_space, suggest_mer_params

SPACES = sorted((Path(__file__).resolve().parents[2] / "tune_spaces").glob("*.yaml"))


def test_spaces_are_shipped():
    assert SPACES, "tune_spaces/ holds no YAML file"


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_samples_and_builds_every_estimator(path):
    space = load_space(path)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        suggest_mer_params(trial, space)
        config = {"lambda": trial.params["lambda"], "estimator": trial.params["estimator"]}
        for key, value in trial.params.items():
            if "/" in key:
                estimator, param = key.split("/", 1)
                config.setdefault(estimator, {})[param] = value
        mer = mer_config_from_trial(config)
        estimator = build_estimator(mer.estimator, **mer.estimator_params)
        assert estimator.name == mer.estimator
        assert space.weight.low <= mer.weight <= space.weight.high
        assert set(mer.estimator_params) == set(space.estimators[mer.estimator])
        seen.add(mer.estimator)
        study.tell(trial, 0.0)
    assert seen == set(space.estimators)


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
