"""The evidence script's arithmetic and page writing, on constructed cell results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "pipelines" / "evidence.py"


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("evidence_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell(target: str, mer: dict[int, tuple[float, float]], base: dict[int, tuple[float, float]]):
    """A cell result whose seeds map to (target_acc, val_acc)."""
    def variant(values):
        return SimpleNamespace(seeds=[SimpleNamespace(seed=seed, target_acc=target_acc, val_acc=val_acc)
                                      for seed, (target_acc, val_acc) in values.items()])
    return SimpleNamespace(target=target, mer=variant(mer), baseline=variant(base))


CELLS = [
    cell("retro", mer={0: (50.0, 70.0), 1: (40.0, 60.0)}, base={0: (30.0, 60.0), 1: (44.0, 64.0)}),
    cell("street", mer={0: (60.0, 80.0), 1: (20.0, 50.0)}, base={0: (40.0, 70.0), 1: (36.0, 56.0)}),
]


def test_per_seed_averages_cells_of_each_seed(evidence):
    assert evidence.per_seed(CELLS, "mer", "target_acc") == [55.0, 30.0]
    assert evidence.per_seed(CELLS, "base", "target_acc") == [35.0, 40.0]


def test_paired_deltas_follow_seeds(evidence):
    assert evidence.paired(CELLS, "target_acc") == [20.0, -10.0]


def test_gap_is_validation_minus_target(evidence):
    assert evidence.gap(CELLS, "base") == [30.0, 20.0]


def test_seed_missing_from_a_cell_is_left_out(evidence):
    partial = [*CELLS, cell("studio", mer={0: (10.0, 20.0)}, base={0: (10.0, 20.0)})]
    assert evidence.per_seed(partial, "mer", "target_acc") == [40.0]


def test_kept_sections_drop_generated_ones(evidence):
    page = ("# Results\n\nintro\n\n## What the figures show\n\n- a finding\n\n"
            "## Diagnostics of the trained encoders\n\n| table |\n\n## Per target domain\n\n### x\n")
    assert evidence.kept_sections(page) == ["## What the figures show\n\n- a finding\n"]


def row(name: str, epochs: int) -> dict:
    return {"name": name, "title": "Fusion vs Fusion + MER", "epochs": epochs, "num_trials": 3, "seeds": "[0,1]",
            "selection": "source-domain validation", "targets": "retro", "base": "35.00 ± 3.54",
            "mer": "42.50 ± 17.68", "deltas": [20.0, -10.0], "delta": "5.00 ± 21.21", "base_gap": "",
            "mer_gap": "", "configs": "logdet lambda 3", "markdown": "| per target |",
            "diagnostics": {"base": {"diag_video_rankme_target": [3.0, 5.0]},
                            "mer": {"diag_video_rankme_target": [4.0, 6.0]}}}


def test_page_keeps_sections_and_row_sizes(evidence, tmp_path):
    page = tmp_path / "results.md"
    page.write_text("# old\n\n## What the figures show\n\n- MER lost on retro.\n\n## Per target domain\n\nold\n")

    evidence.write_page(page, [row("fusion_source_val", 6), row("no_cue@hiding0.5", 12)], "python x")

    text = page.read_text()
    assert "## What the figures show\n\n- MER lost on retro.\n" in text
    assert text.count("## Per target domain") == 1
    assert "| fusion_source_val: Fusion vs Fusion + MER | retro | 6 epochs, 3 trials, seeds [0,1] |" in text
    assert "| no_cue@hiding0.5: Fusion vs Fusion + MER | retro | 12 epochs, 3 trials, seeds [0,1] |" in text
    assert "| fusion_source_val | diag_video_rankme_target | 4.00 ± 1.41 | 5.00 ± 1.41 |" in text
    assert (tmp_path / "results" / "mer_effect.png").stat().st_size > 0


def log_seed_run(client, experiment_id: str, phase: str, seed: int, target_acc: list[float],
                 finished: bool = True) -> None:
    run = client.create_run(experiment_id, tags={"merdg.phase": phase})
    client.log_param(run.info.run_id, "seed", seed)
    for epoch, value in enumerate(target_acc, start=1):
        client.log_metric(run.info.run_id, "target_acc", value, step=epoch)
    client.set_terminated(run.info.run_id, "FINISHED" if finished else "FAILED")


def test_late_epoch_accuracy_averages_last_half(evidence, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("evidence-test", artifact_location=str(tmp_path / "artifacts"))
    log_seed_run(client, experiment_id, "mer-seeds", 0, [10.0, 20.0, 30.0, 40.0])
    log_seed_run(client, experiment_id, "mer-seeds", 0, [0.0, 0.0, 50.0, 70.0])
    log_seed_run(client, experiment_id, "mer-seeds", 1, [0.0, 90.0, 10.0, 20.0])
    log_seed_run(client, experiment_id, "mer-seeds", 1, [0.0, 0.0, 40.0, 40.0])
    log_seed_run(client, experiment_id, "baseline-seeds", 0, [50.0, 50.0, 20.0, 30.0])
    log_seed_run(client, experiment_id, "baseline-seeds", 0, [50.0, 50.0, 20.0, 30.0])
    log_seed_run(client, experiment_id, "baseline-seeds", 1, [10.0, 10.0, 10.0])
    log_seed_run(client, experiment_id, "baseline-seeds", 1, [10.0, 10.0, 10.0])
    log_seed_run(client, experiment_id, "baseline-seeds", 1, [99.0, 99.0, 99.0, 99.0], finished=False)

    late = evidence.late_epoch_accuracy(uri, "evidence-test")
    fields = evidence.late_epoch_fields(uri, "evidence-test")

    assert late["mer"] == [47.5, 27.5]
    assert late["base"] == [25.0, 10.0]
    assert fields["late_delta"] == "20.00 ± 3.54"


def test_rescore_keeps_rows_of_missing_store(evidence, tmp_path, capsys):
    rows_file = tmp_path / "results" / "evidence_rows.json"
    rows_file.parent.mkdir()
    stored = {**row("fusion_source_val", 6), "late_delta": "1.00 ± 2.00",
              "tracking_uri": f"sqlite:///{tmp_path / 'other.db'}", "experiment": "evidence-gone"}
    rows_file.write_text(json.dumps({"rows": [stored], "commands": ["python x"], "wall_s": 1.0}))

    assert evidence.rescore(tmp_path / "results.md", rows_file) == 0

    assert "evidence-gone" in capsys.readouterr().err
    assert "| 1.00 ± 2.00 |" in (tmp_path / "results.md").read_text()
