"""Tests of benchmarks/tuning_efficiency.py: the grid of a discrete space, the trial-epoch
counts against brute force over every order, and one tiny run of the whole script."""

from __future__ import annotations

import importlib.util
import itertools
import json
import statistics
import sys
from pathlib import Path

import pytest

from merdg.tuning.space import SearchSpaceError, load_space, mer_config_from_trial, parse_space

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "tuning_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script, imported as a module."""
    spec = importlib.util.spec_from_file_location("tuning_efficiency_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_grid_of_shipped_discrete_space(bench):
    space = load_space(REPO_ROOT / "tune_spaces" / "discrete.yaml")
    points = bench.grid_points(space)
    assert len(points) == len(space.estimators) * len(space.weight.choices)
    labels = {bench.point_label(point) for point in points}
    assert len(labels) == len(points)
    for point in points:
        mer = mer_config_from_trial(point)
        assert mer.estimator in space.estimators
        assert mer.weight in space.weight.choices


def test_grid_crosses_estimator_parameters_and_constants(bench):
    space = parse_space({
        "lambda": {"distribution": "categorical", "choices": [0.1, 1.0]},
        "estimators": {
            "logdet": {"terms": {"distribution": "categorical", "choices": ["marginal", "spectral", "both"]}},
            "koleo": {},
        },
        "normalize": {"distribution": "constant", "value": "l2"},
    })
    points = bench.grid_points(space)
    assert len(points) == 2 * 3 + 2
    logdet = [point for point in points if point["estimator"] == "logdet"]
    assert {point["logdet"]["terms"] for point in logdet} == {"marginal", "spectral", "both"}
    assert all(point["normalize"] == "l2" for point in points)
    assert all("logdet" not in point for point in points if point["estimator"] == "koleo")
    assert mer_config_from_trial(logdet[0]).estimator_params == {"terms": logdet[0]["logdet"]["terms"]}


def test_grid_rejects_continuous_distribution(bench):
    space = parse_space({"lambda": {"distribution": "log_uniform", "low": 0.1, "high": 10.0},
                         "estimators": {"koleo": {}}}, path="spaces/ranged.yaml")
    with pytest.raises(SearchSpaceError, match=r"spaces/ranged.yaml: lambda: a grid needs categorical"):
        bench.grid_points(space)


def test_point_label_ignores_key_order(bench):
    first = bench.point_label({"lambda": 1.0, "estimator": "logdet", "logdet": {"gamma": 0.5}})
    second = bench.point_label({"logdet": {"gamma": 0.5}, "estimator": "logdet", "lambda": 1.0})
    assert first == second == "logdet, lambda=1, logdet/gamma=0.5"


CURVES = [
    [40.0, 50.0, 55.0],  # never reaches 60
    [30.0, 61.0, 62.0],  # reaches at epoch 2
    [58.0, 59.0, 60.0],  # reaches at epoch 3
    [20.0, 25.0],        # never reaches, stopped after 2 epochs
]


def brute_force(curves, threshold):
    counts = []
    for order in itertools.permutations(range(len(curves))):
        spent = 0
        for index in order:
            reached = next((e for e, v in enumerate(curves[index], 1) if v >= threshold), None)
            if reached is not None:
                counts.append(spent + reached)
                break
            spent += len(curves[index])
    return counts


def test_grid_counts_match_every_order(bench):
    counts = brute_force(CURVES, 60.0)
    assert bench.grid_epochs_expected(CURVES, 60.0) == pytest.approx(statistics.mean(counts))
    assert bench.grid_epochs_worst(CURVES, 60.0) == max(counts)
    assert bench.grid_epochs_in_order(CURVES, 60.0, [0, 3, 2, 1]) == 3 + 2 + 3
    assert bench.grid_epochs_in_order(CURVES, 60.0, [1, 0, 2, 3]) == 2


def test_grid_counts_when_nothing_reaches(bench):
    assert bench.grid_epochs_expected(CURVES, 99.0) is None
    assert bench.grid_epochs_worst(CURVES, 99.0) is None
    assert bench.grid_epochs_in_order(CURVES, 99.0, [0, 1, 2, 3]) is None


def test_grid_shuffles_stay_within_every_order(bench):
    counts = brute_force(CURVES, 60.0)
    shuffled = bench.grid_epochs_shuffled(CURVES, 60.0, shuffles=200, seed=3)
    assert len(shuffled) == 200
    assert min(shuffled) >= min(counts)
    assert max(shuffled) <= max(counts)
    assert statistics.mean(shuffled) == pytest.approx(statistics.mean(counts), abs=0.5)
    assert shuffled == bench.grid_epochs_shuffled(CURVES, 60.0, shuffles=200, seed=3)


def test_search_count_follows_arrival_order(bench):
    Report = bench.EpochReport
    reports = [Report("a", 1, 40.0, 0.0), Report("b", 1, 45.0, 0.0), Report("a", 2, 50.0, 0.0),
               Report("a", 2, 50.0, 0.0), Report("b", 2, 61.0, 0.0)]
    # The repeated report of trial a's epoch 2 is one epoch spent, not two.
    assert bench.trial_epochs_until(reports, 60.0) == 4
    assert bench.trial_epochs_until(reports, 45.0) == 2
    assert bench.trial_epochs_until(reports, 70.0) is None


def phase(bench, name, curves, labels):
    trials, reports, spent = [], [], 0
    for index, (curve, label) in enumerate(zip(curves, labels)):
        trial_id = f"{name}{index}"
        reports += [bench.EpochReport(trial_id, epoch, value, value - 10) for epoch, value in enumerate(curve, 1)]
        spent += len(curve)
        trials.append(bench.TrialRecord(trial_id, label, {}, list(curve), [v - 10 for v in curve],
                                        status="finished", trial_epochs_at_end=spent))
    return bench.PhaseRecord(name, trials, reports, wall_s=1.0)


def test_summary_figures(bench):
    grid = phase(bench, "g", CURVES, ["p0", "p1", "p2", "p3"])
    search = phase(bench, "s", [[20.0, 25.0], [58.0, 59.0, 60.0]], ["p3", "p2"])
    summary = bench.summarize(grid, search, tolerance=2.0, shuffles=5, seed=0)
    # The grid's best is 62 at p1, epoch 3, so the threshold is 60.
    assert summary["grid_best_val_acc"] == 62.0
    assert summary["grid_best"] == {"label": "p1", "epoch": 3, "target_acc": 52.0}
    assert summary["search_trial_epochs_to_reach"] == 2 + 3
    assert summary["grid_trial_epochs_expected"] == pytest.approx(statistics.mean(brute_force(CURVES, 60.0)))
    assert summary["ratio_expected"] == pytest.approx(summary["grid_trial_epochs_expected"] / 5)
    assert summary["ratio_worst"] == pytest.approx(max(brute_force(CURVES, 60.0)) / 5)
    assert summary["grid_points_within_tolerance"] == 2
    assert summary["search_distinct_points"] == 2
    assert summary["repeat_check"] == {"epochs_compared": 5, "max_abs_val_acc_difference": 0.0}


def test_summary_when_search_never_reaches(bench):
    grid = phase(bench, "g", CURVES, ["p0", "p1", "p2", "p3"])
    search = phase(bench, "s", [[20.0, 25.0]], ["p3"])
    summary = bench.summarize(grid, search, tolerance=1.0, shuffles=5, seed=0)
    assert summary["search_trial_epochs_to_reach"] is None
    assert summary["ratio_expected"] is None
    assert "never" in bench.summary_table(summary)


def test_rejects_trial_budget_as_large_as_grid(bench, tmp_path):
    args = bench.parse_args(["--num-trials", "9", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--num-trials 9 is not smaller than the 9 points"):
        bench.run(args, tmp_path)


@pytest.mark.slow
def test_script_runs_end_to_end(bench, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lambda: {distribution: categorical, choices: [0.1]}\nestimators: {logdet: {}, koleo: {}}\n")
    record_file = tmp_path / "record.json"
    code = bench.main(["--space", str(space), "--epochs", "1", "--num-trials", "1", "--clips-per-class", "4",
                       "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "runs"),
                       "--json", str(record_file)])
    assert code == 0
    record = json.loads(record_file.read_text())
    assert [len(trial["val_acc"]) for trial in record["grid"]["trials"]] == [1, 1]
    assert len(record["search"]["trials"]) == 1
    assert record["summary"]["grid_trial_epochs_total"] == 2
    assert record["summary"]["search_trial_epochs_to_reach"] in (1, None)
