"""Run the embedded benchmark's evidence sweeps and write the results page (docs/results.md).

Each sweep is the real main job (Ray Data, Ray Train, Ray Tune with Optuna, MLflow) on the
generated benchmark, with its no-MER baseline trained on the same seeds:

- ``fusion_source_val``, ``fusion_lodo``, ``fusion_oracle``: Fusion against Fusion + MER (lambda
  and estimator searched), under each selection method;
- ``fusion_fixed_mer``: Fusion against Fusion + MER at the paper's setting, nothing searched;
- ``no_cue``: the same on the benchmark's no-cue twin, where fusion has nothing to overfit to;
- ``unimodal``: each modality trained alone;
- ``frozen_encoders``: the encoders frozen at their random initialisation, only the heads train;
- ``low_encoder_lr``: the encoders at a tenth of the learning rate.

The last three, like ``fusion_fixed_mer``, train MER at the paper's fixed setting (log-det, lambda 3) besides their baseline.
The page reports, per sweep, the seed-mean accuracies averaged over target domains, the
fusion-overfitting gap (source validation minus target accuracy), MER's effect as paired
per-seed differences, and the diagnostics of the trained models (``diag_*`` metrics).

    python pipelines/evidence.py                        # every sweep, the main job's sizes
    python pipelines/evidence.py --only fusion_source_val no_cue --epochs 6
    python pipelines/evidence.py --keep --only fusion_oracle --tune.targets '[retro]'   # add a row
    python pipelines/evidence.py --keep --only no_cue --variant hiding0.5 --data.benchmark.cue_hiding 0.5
    python pipelines/evidence.py --rescore      # late-epoch columns again from the rows' MLflow stores

Flags the script does not know go to every sweep's main job. With ``--variant NAME`` the rows are
named ``<sweep>@NAME`` and list those flags, so that a changed benchmark or training setting gets
rows of its own beside the unchanged ones. Sections of an existing page whose headings this
script does not write (the reading of the figures) are kept when the page is written again.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXED_MER = ["--tune.space", str(REPO_ROOT / "tune_spaces" / "paper_fixed.yaml"), "--tune.num_trials", "1"]

SWEEPS: dict[str, tuple[str, list[str]]] = {
    "fusion_source_val": ("Fusion vs Fusion + MER, source-domain validation", []),
    "no_cue": ("no-cue twin: Fusion vs Fusion + MER, source-domain validation", ["--data.benchmark.cue", "false"]),
    "fusion_lodo": ("Fusion vs Fusion + MER, leave-one-source-domain-out validation", ["--tune.selection", "lodo"]),
    "fusion_oracle": ("Fusion vs Fusion + MER, oracle selection (target data)", ["--tune.selection", "oracle"]),
    "fusion_fixed_mer": ("Fusion vs Fusion + MER at the paper's setting (lambda 3, log-det), source-domain validation",
                         FIXED_MER),
    "low_encoder_lr": ("encoders at 0.1x the learning rate (MER at lambda 3, log-det)",
                       ["--train.encoder_lr_scale", "0.1", *FIXED_MER]),
    "frozen_encoders": ("frozen random encoders, heads trained (MER at lambda 3, log-det)",
                        ["--model.trainable_from", "head", *FIXED_MER]),
    "unimodal": ("each modality alone (MER at lambda 3, log-det)",
                 ["--tune.modality_sets", "[[video],[audio],[flow]]", *FIXED_MER]),
}
"""Evidence sweeps by name: a description and the main job's flags that make the sweep."""

GENERATED_SECTIONS = ("Diagnostics of the trained encoders", "Per target domain")
"""Headings of the page's sections that ``write_page`` writes; any other section is kept from the old page."""

DIAGNOSTICS = ("rankme_target", "cka_source_target", "procrustes_source_target", "domain_probe_acc",
               "unimodal_target_acc")
"""Per-modality ``diag_<m>_<name>`` metrics shown on the page."""


def _fmt(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def per_seed(cells, variant: str, accuracy: str) -> list[float]:
    """Return each seed's accuracy averaged over the cells (target domains and modality sets)."""
    by_seed: dict[int, list[float]] = {}
    for cell in cells:
        chosen = cell.mer if variant == "mer" else cell.baseline
        for seed in chosen.seeds if chosen else []:
            by_seed.setdefault(seed.seed, []).append(getattr(seed, accuracy))
    return [statistics.fmean(values) for values in by_seed.values() if len(values) == len(cells)]


def paired(cells, accuracy: str) -> list[float]:
    mer, base = per_seed(cells, "mer", accuracy), per_seed(cells, "base", accuracy)
    return [m - b for m, b in zip(mer, base, strict=True)] if len(mer) == len(base) else []


def gap(cells, variant: str) -> list[float]:
    return [v - t for v, t in zip(per_seed(cells, variant, "val_acc"), per_seed(cells, variant, "target_acc"),
                                  strict=True)]


def seed_runs(tracking_uri: str, experiment: str) -> Iterator[tuple[Any, str, Any]]:
    """Yield (client, variant, run) for each finished seed run of a sweep; variant is 'mer' or 'base'."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"experiment {experiment!r} not found in the MLflow store {tracking_uri}")
    for run in client.search_runs([found.experiment_id], max_results=5000):
        phase = run.data.tags.get("merdg.phase", "")
        if phase in ("mer-seeds", "baseline-seeds") and run.info.status == "FINISHED":
            yield client, "mer" if phase == "mer-seeds" else "base", run


def late_epoch_accuracy(tracking_uri: str, experiment: str) -> dict[str, list[float]]:
    """Return each seed's target_acc averaged over the last half of its epochs, then over cells, by variant.

    No epoch is selected, so the figure shows how much an accuracy read at one selected epoch owes to
    that epoch. Seeds are in increasing order, and a seed that lacks a cell is left out.
    """
    by_seed: dict[str, dict[int, list[float]]] = {"mer": {}, "base": {}}
    for client, variant, run in seed_runs(tracking_uri, experiment):
        history = sorted(client.get_metric_history(run.info.run_id, "target_acc"), key=lambda metric: metric.step)
        if not history:
            continue
        last_half = [metric.value for metric in history[len(history) // 2:]]
        by_seed[variant].setdefault(int(run.data.params["seed"]), []).append(statistics.fmean(last_half))
    result = {}
    for variant, seeds in by_seed.items():
        cells = max((len(values) for values in seeds.values()), default=0)
        result[variant] = [statistics.fmean(values) for _, values in sorted(seeds.items()) if len(values) == cells]
    return result


def late_epoch_fields(tracking_uri: str, experiment: str) -> dict[str, Any]:
    """Return a row's late-epoch figures: base and MER means ± std, and the paired deltas."""
    late = late_epoch_accuracy(tracking_uri, experiment)
    deltas = [m - b for m, b in zip(late["mer"], late["base"], strict=True)] if len(late["mer"]) == len(
        late["base"]) else []
    return {"late_base": _fmt(late["base"]), "late_mer": _fmt(late["mer"]), "late_delta": _fmt(deltas),
            "late_deltas": deltas}


def seed_diagnostics(tracking_uri: str, experiment: str) -> dict[str, dict[str, list[float]]]:
    """Return the last value of every diag_ metric of each seed run, by variant ('mer', 'base') and metric name."""
    values: dict[str, dict[str, list[float]]] = {"mer": {}, "base": {}}
    for _, variant, run in seed_runs(tracking_uri, experiment):
        for key, value in run.data.metrics.items():
            if key.startswith("diag_"):
                values[variant].setdefault(key, []).append(value)
    return values


def kept_sections(text: str) -> list[str]:
    """Return the '## ' sections of a page, heading included, that ``write_page`` does not generate."""
    sections = []
    for block in text.split("\n## ")[1:]:
        heading = block.splitlines()[0].strip()
        if heading not in GENERATED_SECTIONS:
            sections.append("## " + block.rstrip() + "\n")
    return sections


def row_sizes(row: dict) -> str:
    """Return a row's training sizes, e.g. '6 epochs, 3 trials, seeds [0,1,2]'."""
    trials = "1 trial" if row["num_trials"] == 1 else f"{row['num_trials']} trials"
    return f"{row['epochs']} epochs, {trials}, seeds {row['seeds']}"


def write_page(path: Path, rows: list[dict], command: str) -> None:
    """Write the results page: the effect table, the diagnostics table, per-target tables, and the plot.

    Sections of the existing page that this function does not generate are kept after the plot.
    """
    hand_written = kept_sections(path.read_text(encoding="utf-8")) if path.exists() else []
    figure_path = path.parent / "results" / "mer_effect.png"
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    _plot(rows, figure_path)
    lines = [
        "# Results on the embedded benchmark",
        "",
        "Measured with the real main job (Ray Data decoding, Ray Train DDP on CPU, Ray Tune with Optuna,",
        "MLflow) on the generated benchmark. Regenerate this page with:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Accuracies are top-1 (%), the mean ± standard deviation over seeds of each seed's accuracy "
        "averaged over the row's target domains (and over modality sets for `unimodal`). `target_acc` is "
        "measured on the target domain's train and test lists together. The gap is source validation "
        "accuracy minus target accuracy (the fusion-overfitting gap). Delta is MER minus the baseline, "
        "paired by seed. Each row names the selection method that picked the reported configuration "
        "and epoch. The late-epoch columns select no epoch: they average each seed run's target_acc over "
        "the last half of its epochs, for the selected MER configuration. They show how much a figure "
        "read at one selected epoch owes to that epoch.",
        "",
        "| sweep | targets | sizes | selection | base target_acc | MER target_acc | delta (paired) | base gap | "
        "MER gap | late-epoch base | late-epoch MER | late-epoch delta | MER configurations |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['name']}: {row['title']} | {row['targets']} | {row_sizes(row)} | {row['selection']} | "
                     f"{row['base']} | {row['mer']} | {row['delta']} | {row['base_gap']} | {row['mer_gap']} | "
                     f"{row.get('late_base', '')} | {row.get('late_mer', '')} | {row.get('late_delta', '')} | "
                     f"{row['configs']} |")
    lines += ["", f"![MER's paired effect per sweep]({figure_path.parent.name}/{figure_path.name})", ""]
    lines += hand_written
    lines += ["## Diagnostics of the trained encoders", "",
              "Means ± std over seed runs and target domains, measured after the last epoch on held-out rows "
              "(see README, \"Diagnostics of the trained model\"). RankMe is the effective rank; CKA and "
              "Procrustes compare source and target class means; the domain probe predicts the domain "
              "(chance 33.3%); the unimodal probe is a fresh head on one modality's frozen features, "
              "scored on the target.", ""]
    lines += ["| sweep | metric | base | MER |", "|---|---|---|---|"]
    for row in rows:
        for key in sorted(row["diagnostics"]["base"]):
            if not any(key.endswith(name) for name in DIAGNOSTICS) and "without" not in key and "noise" not in key:
                continue
            lines.append(f"| {row['name']} | {key} | {_fmt(row['diagnostics']['base'][key])} | "
                         f"{_fmt(row['diagnostics']['mer'].get(key, []))} |")
    lines += ["", "## Per target domain", ""]
    for row in rows:
        lines += [f"### {row['name']}", "", row["markdown"], ""]
    path.write_text("\n".join(lines))


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values) if values else 0.0
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _plot(rows: list[dict], path: Path) -> None:
    """Plot each row's paired delta at the selected epoch beside its late-epoch delta."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2))
    axis = figure.subplots()
    positions = range(len(rows))
    width = 0.4
    for offset, key, label, color in ((-width / 2, "deltas", "at the selected epoch", "tab:blue"),
                                      (width / 2, "late_deltas", "last half of the epochs, no selection", "tab:orange")):
        stats = [_mean_std(row.get(key, [])) for row in rows]
        axis.bar([p + offset for p in positions], [mean for mean, _ in stats], width, yerr=[std for _, std in stats],
                 capsize=3, color=color, label=label)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(positions, [row["name"] for row in rows], rotation=25, ha="right", fontsize=8)
    axis.set_ylabel("MER - baseline, target_acc (points)")
    axis.set_title("Paired effect of MER per sweep (mean ± std over seeds)", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def rescore(page: Path, rows_file: Path) -> int:
    """Recompute the late-epoch figures of every stored row that names its MLflow store, and rewrite the page."""
    if not rows_file.exists():
        print(f"error: {rows_file} not found; run the sweeps first", file=sys.stderr)
        return 2
    stored = json.loads(rows_file.read_text())
    for row in stored["rows"]:
        if row.get("tracking_uri") and row.get("experiment"):
            try:
                row.update(late_epoch_fields(row["tracking_uri"], row["experiment"]))
            except LookupError as error:
                print(f"warning: row {row['name']}: {error}; its stored late-epoch figures are kept", file=sys.stderr)
    rows_file.write_text(json.dumps(stored, indent=1))
    write_page(page, stored["rows"], "\n".join(c.strip() for c in stored.get("commands", [])))
    print(f"Wrote {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evidence.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SWEEPS), help="run these sweeps only")
    parser.add_argument("--output_dir", type=Path, default=Path("merdg_evidence"),
                        help="runs and MLflow store (default: ./merdg_evidence)")
    parser.add_argument("--page", type=Path, default=REPO_ROOT / "docs" / "results.md", help="the page to write")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per run (default: 10)")
    parser.add_argument("--num_trials", type=int, default=4, help="search trials per target (default: 4)")
    parser.add_argument("--seeds", default="[0,1,2]", help="seeds of every retraining (default: [0,1,2])")
    parser.add_argument("--variant", help="name the rows '<sweep>@VARIANT' and list the extra flags in their titles")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: recompute the late-epoch figures of the stored rows from their MLflow "
                             "stores and rewrite the page")
    parser.add_argument("--keep", action="store_true",
                        help="keep the rows of sweeps that an earlier run wrote to the page and this run does not redo")
    args, extra = parser.parse_known_args(argv)

    from merdg.cli import parse_job
    from merdg.tuning.job import resolve_paths, run_job

    started = time.perf_counter()
    rows_file = args.page.parent / "results" / "evidence_rows.json"
    if args.rescore:
        return rescore(args.page, rows_file)
    names = args.only or list(SWEEPS)
    row_names = [f"{name}@{args.variant}" if args.variant else name for name in names]
    rows = []
    earlier_wall_s = 0.0
    if args.keep and rows_file.exists():
        stored = json.loads(rows_file.read_text())
        rows = [row for row in stored["rows"] if row["name"] not in row_names]
        earlier_wall_s = float(stored.get("wall_s", 0.0))
        commands = stored.get("commands", [])
    else:
        commands = []
    commands.append("python pipelines/evidence.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    for name, row_name in zip(names, row_names, strict=True):
        title, flags = SWEEPS[name]
        if args.variant:
            title = f"{title}, with {' '.join(extra)}" if extra else title
        argv_job = ["--output_dir", str(args.output_dir), "--tracking.experiment", f"evidence-{name}",
                    "--train.epochs", str(args.epochs), "--tune.num_trials", str(args.num_trials),
                    "--tune.seeds", args.seeds, "--tune.baseline", "true", *flags, *extra]
        job = resolve_paths(parse_job(argv_job, prog="evidence.py"), REPO_ROOT)
        logging.getLogger(__name__).info("evidence sweep %s: %s", name, " ".join(argv_job))
        result = run_job(job)
        cells = result.results
        configs = sorted({f"{c.mer.params.get('estimator')} lambda {float(c.mer.params.get('lambda', 0)):.3g}"
                          for c in cells})
        rows.append({
            "name": row_name, "title": title,
            "epochs": job.train.epochs, "num_trials": job.tune.num_trials, "seeds": args.seeds, "selection": result.selection_label,
            "base": _fmt(per_seed(cells, "base", "target_acc")), "mer": _fmt(per_seed(cells, "mer", "target_acc")),
            "deltas": paired(cells, "target_acc"), "delta": _fmt(paired(cells, "target_acc")),
            "base_gap": _fmt(gap(cells, "base")), "mer_gap": _fmt(gap(cells, "mer")),
            "configs": "; ".join(configs), "markdown": result.markdown,
            "targets": ", ".join(sorted({c.target for c in cells})),
            "diagnostics": seed_diagnostics(result.tracking_uri, result.experiment),
            "tracking_uri": result.tracking_uri, "experiment": result.experiment,
            **late_epoch_fields(result.tracking_uri, result.experiment),
        })
        wall_s = earlier_wall_s + time.perf_counter() - started
        # The page is rewritten after each sweep, so an interrupted run keeps what it measured.
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        rows_file.write_text(json.dumps({"rows": rows, "wall_s": wall_s, "commands": commands}, indent=1))
        write_page(args.page, rows, "\n".join(c.strip() for c in commands))
        print(f"{row_name}: MER {rows[-1]['mer']}, base {rows[-1]['base']}, delta {rows[-1]['delta']} "
              f"({result.selection_label})", flush=True)
    print(f"Wrote {args.page}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
