"""The code that runs inside a Ray Tune trial, and the cell it trains for.

It is kept apart from the sweep's driver code (``merdg.tuning.sweep``), so that a trial's process
imports what training needs and not MLflow, Optuna or the decoders. Every trial starts a new
process, and those imports took about a second of CPU each on a 2-core machine.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from merdg.config import JobConfig
from merdg.training.trainer import WorkerResources, build_trainer
from merdg.tuning.space import mer_config_from_trial


@dataclass(frozen=True)
class Cell:
    """One unit of a sweep: a protocol, a target domain with its sources, a modality set and a host method."""

    protocol: str
    target: str
    sources: tuple[str, ...]
    modalities: tuple[str, ...]
    method: str

    @property
    def name(self) -> str:
        return f"{'+'.join(self.sources)}->{self.target} {'+'.join(self.modalities)} {self.method} ({self.protocol})"

    def identity(self, sweep_id: str) -> str:
        """Return a short hash of the sweep's identity and the cell, which names its Tune experiments and tags its run."""
        return hashlib.sha256(f"{sweep_id}|{self.name}".encode()).hexdigest()[:12]

    def job(self, base: JobConfig) -> JobConfig:
        """The job config of this cell's runs: ``base`` with the cell's modalities and host method."""
        job = copy.deepcopy(base)
        job.data.modalities = list(self.modalities)
        job.train.method = self.method
        return job


@dataclass(frozen=True)
class CellPlan:
    """Inputs of one cell's runs besides the job config."""

    cell: Cell
    cache_path: Path
    num_classes: int
    resources: WorkerResources
    concurrency: int
    cell_id: str


def _with_seed(job: JobConfig, config: dict[str, Any]) -> JobConfig:
    if "seed" not in config:
        return job
    job = copy.deepcopy(job)
    job.train.seed = int(config["seed"])
    return job


def run_trial(config: dict[str, Any], *, job: JobConfig, plan: CellPlan,
              datasets: dict[str, ray.data.Dataset]) -> None:
    """Train one configuration on all source domains (a Ray Tune function trainable).

    The trial only drives a ``TorchTrainer`` over datasets materialized once per cell; the
    trainer's workers report each epoch to Tune through ``TuneReportCallback``. A 'seed' in
    ``config`` overrides ``--train.seed``.
    """
    job = _with_seed(job, config)
    mer = mer_config_from_trial(config, base=job.mer)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(job, mer, datasets, plan.num_classes, plan.resources,
                            name=f"{plan.cell_id}-{trial_id}", storage_path=job.output_dir / "train",
                            callbacks=[TuneReportCallback()])
    trainer.fit()


def run_lodo_trial(config: dict[str, Any], *, job: JobConfig, plan: CellPlan,
                   folds: dict[str, dict[str, ray.data.Dataset]]) -> None:
    """Train one configuration once per held-out source domain, then report ``lodo_acc`` per epoch.

    Each fold trains on the other source domains and measures the held-out one (its train and
    test lists) as its target. ``lodo_acc`` is the mean over folds; ``lodo_acc_<domain>`` each fold's.
    """
    job = _with_seed(job, config)
    mer = mer_config_from_trial(config, base=job.mer)
    trial_id = ray.tune.get_context().get_trial_id()
    per_fold: dict[str, dict[int, float]] = {}
    for held_out, datasets in folds.items():
        trainer = build_trainer(job, mer, datasets, plan.num_classes, plan.resources,
                                name=f"{plan.cell_id}-{trial_id}-lodo-{held_out}",
                                storage_path=job.output_dir / "train", keep_all_checkpoints=True)
        # NOTE: every epoch's checkpoint of a fold stays on disk. With the paper backbones (about 105 M
        # parameters) each holds at least 0.4 GB of float32 weights.
        frame = trainer.fit().metrics_dataframe
        per_fold[held_out] = {int(row["epoch"]): float(row["target_acc"])
                              for row in frame[["epoch", "target_acc"]].dropna().to_dict("records")}
    epochs = sorted(set.intersection(*(set(values) for values in per_fold.values())))
    if not epochs:
        raise RuntimeError(f"the lodo folds of trial {trial_id} reported no common epoch: {per_fold}")
    for epoch in epochs:
        metrics = {f"lodo_acc_{domain}": values[epoch] for domain, values in per_fold.items()}
        metrics.update(epoch=epoch, lodo_acc=sum(v[epoch] for v in per_fold.values()) / len(per_fold))
        ray.tune.report(metrics)
