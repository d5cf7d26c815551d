"""Diagnostics of the trained model: metric names and values, the collector, and the gather over 2 gloo workers."""

from __future__ import annotations

import math
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from merdg.config import ModelConfig
from merdg.models import MultimodalModel
from merdg.models.heads import FusionHead
from merdg.training.model_diagnostics import (
    DOMAIN_INDEX_COLUMN,
    DiagnosticsCollector,
    HeldOutFeatures,
    compute_diagnostics,
    gather_diagnostics,
)

MODALITIES = ("video", "audio")
NUM_CLASSES = 3


def expected_names(modalities) -> set[str]:
    names = {"diag_domain_probe_chance", "diag_target_acc_noise"}
    for m in modalities:
        names |= {f"diag_{m}_{name}" for name in (
            "rankme_val", "rankme_target", "cka_source_target", "procrustes_source_target",
            "domain_probe_acc", "unimodal_target_acc")}
        names.add(f"diag_target_acc_without_{m}")
    return names


def held_out(rows_per_domain: int, domains: list[int], seed: int, width: int = 6) -> HeldOutFeatures:
    """Rows of the given domains with classes cycling 0..C-1; video carries the class, audio is noise."""
    generator = torch.Generator().manual_seed(seed)
    count = rows_per_domain * len(domains)
    labels = torch.arange(count) % NUM_CLASSES
    video = 8.0 * torch.nn.functional.one_hot(labels, width).float() + torch.randn(count, width, generator=generator)
    audio = torch.randn(count, width, generator=generator)
    return HeldOutFeatures(embeddings={"video": video, "audio": audio}, labels=labels,
                           domains=torch.tensor(domains).repeat_interleave(rows_per_domain))


def video_reading_head(width: int = 6) -> FusionHead:
    """A fusion head whose logits are the first NUM_CLASSES video dimensions, whatever the audio."""
    head = FusionHead(2 * width, NUM_CLASSES, NUM_CLASSES, dropout=0.5)
    first, last = head.layers[0], head.layers[3]
    with torch.no_grad():
        first.weight.zero_()
        first.bias.zero_()
        first.weight[:, :NUM_CLASSES] = torch.eye(NUM_CLASSES)
        last.weight.copy_(torch.eye(NUM_CLASSES))
        last.bias.zero_()
        last.bias[0] = 0.5
    return head.eval()


def test_compute_diagnostics_names_and_values():
    source = held_out(30, [0, 1], seed=0)
    target = held_out(60, [2], seed=1)
    metrics = compute_diagnostics(source, target, video_reading_head(), NUM_CLASSES, noise_counts=(45.0, 60.0), seed=0)
    assert set(metrics) == expected_names(MODALITIES)
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert metrics["diag_target_acc_noise"] == 75.0
    assert metrics["diag_domain_probe_chance"] == pytest.approx(100.0 / 3)
    # Video alone classifies every target row; without it the head predicts class 0 (a third of the rows).
    assert metrics["diag_target_acc_without_audio"] == 100.0
    assert metrics["diag_target_acc_without_video"] == pytest.approx(100.0 / 3)
    assert metrics["diag_video_unimodal_target_acc"] >= 95.0
    assert metrics["diag_audio_unimodal_target_acc"] < 70.0
    # The class means of both groups are the same one-hot centres.
    assert metrics["diag_video_cka_source_target"] > 0.95
    assert metrics["diag_video_procrustes_source_target"] < 0.05
    for m in MODALITIES:
        assert 1.0 <= metrics[f"diag_{m}_rankme_val"] <= 6.0
        assert 0.0 <= metrics[f"diag_{m}_domain_probe_acc"] <= 100.0


def test_compute_diagnostics_reports_nan_when_undefined():
    # One target row: the domain probe cannot split it and the class-mean comparison has one shared class.
    source = held_out(30, [0, 1], seed=2)
    target = held_out(1, [2], seed=3)
    metrics = compute_diagnostics(source, target, video_reading_head(), NUM_CLASSES, noise_counts=(0.0, 0.0), seed=0)
    assert set(metrics) == expected_names(MODALITIES)
    assert math.isnan(metrics["diag_video_domain_probe_acc"])
    assert math.isnan(metrics["diag_video_cka_source_target"])
    assert math.isnan(metrics["diag_target_acc_noise"])
    assert math.isfinite(metrics["diag_video_rankme_val"])


def tiny_model() -> MultimodalModel:
    torch.manual_seed(0)
    config = ModelConfig(embed_dim=8, width=2, fusion_hidden=8)
    return MultimodalModel(list(MODALITIES), NUM_CLASSES, config, with_projectors=False).eval()


def tiny_batch(rows: int, domain: int) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(rows + domain)
    inputs = {"video": torch.randn(rows, 3, 4, 16, 16, generator=generator),
              "audio": torch.randn(rows, 1, 32, 16, generator=generator)}
    batch = {"label": torch.arange(rows) % NUM_CLASSES, DOMAIN_INDEX_COLUMN: torch.full((rows,), domain)}
    return batch, inputs


@torch.no_grad()
def test_collector_keeps_rows_and_scores_noisy_target():
    model = tiny_model()
    collector = DiagnosticsCollector(list(MODALITIES), noise_std=0.0, seed=0)
    clean_correct = 0.0
    for eval_set, rows, domain in (("val", 5, 0), ("val", 4, 1), ("target_train", 3, 2), ("target_test", 2, 2)):
        batch, inputs = tiny_batch(rows, domain)
        output = model(inputs)
        if eval_set != "val":
            clean_correct += float((output.logits.argmax(dim=1) == batch["label"]).sum())
        collector.add(eval_set, batch, inputs, output, model)
    source, target = collector.features("val"), collector.features("target")
    assert source.embeddings["video"].shape == (9, 8)
    assert target.embeddings["audio"].shape == (5, 8)
    assert source.domains.tolist() == [0] * 5 + [1] * 4
    assert target.labels.tolist() == [0, 1, 2, 0, 1]
    # Zero noise: the noisy pass repeats the clean predictions of the 5 target rows.
    assert (collector.noise_correct, collector.noise_count) == (clean_correct, 5.0)


def test_collector_rejects_batch_without_domain_index():
    model = tiny_model()
    collector = DiagnosticsCollector(list(MODALITIES), noise_std=0.1, seed=0)
    batch, inputs = tiny_batch(2, 0)
    del batch[DOMAIN_INDEX_COLUMN]
    with pytest.raises(KeyError, match="domain_index"):
        collector.add("val", batch, inputs, model(inputs), model)


def filled_collector(rank: int) -> DiagnosticsCollector:
    """A collector fed this rank's half of the rows of ``held_out``, by a stub model that always predicts class 0."""
    collector = DiagnosticsCollector(list(MODALITIES), noise_std=0.0, seed=rank)
    for eval_set, features in (("val", held_out(30, [0, 1], seed=0)), ("target_test", held_out(60, [2], seed=1))):
        rows = torch.from_numpy(np.array_split(np.arange(len(features.labels)), 2)[rank])
        batch = {"label": features.labels[rows], DOMAIN_INDEX_COLUMN: features.domains[rows]}
        output = SimpleNamespace(embeddings={m: e[rows] for m, e in features.embeddings.items()})
        stub_model = lambda inputs, count=len(rows): SimpleNamespace(logits=torch.zeros(count, NUM_CLASSES))  # noqa: E731
        collector.add(eval_set, batch, {}, output, stub_model)
    return collector


def gather_worker(rank: int, port: int, results: dict) -> None:
    """Gather twice in one process group: with the right head, then with a head that fails on rank 0."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results["ok", rank] = gather_diagnostics(filled_collector(rank), video_reading_head(), NUM_CLASSES,
                                                 rank=rank, seed=0)
        # Rank 0 gets a head of the wrong input width, so its computation raises.
        head = torch.nn.Linear(1, 1) if rank == 0 else video_reading_head()
        try:
            gather_diagnostics(filled_collector(rank), head, NUM_CLASSES, rank=rank, seed=0)
            results["failed", rank] = "no error"
        except RuntimeError as error:
            results["failed", rank] = str(error)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(180)
def test_gather_over_two_workers():
    results = mp.Manager().dict()
    mp.spawn(gather_worker, args=(free_port(), results), nprocs=2, join=True)
    # The stub model predicts class 0, right for the 20 target rows of that class out of 60.
    expected = compute_diagnostics(held_out(30, [0, 1], seed=0), held_out(60, [2], seed=1), video_reading_head(),
                                   NUM_CLASSES, noise_counts=(20.0, 60.0), seed=0)
    for rank in (0, 1):
        metrics = dict(results["ok", rank])
        assert metrics.pop("diag_time_s") >= 0.0
        assert metrics == pytest.approx(expected), f"rank {rank}"
        # An error on rank 0 reaches every rank instead of leaving rank 1 waiting.
        assert "failed on rank 0" in results["failed", rank], f"rank {rank}"
        assert "--train.diagnostics false" in results["failed", rank]


def test_gather_without_process_group_computes_locally():
    metrics = gather_diagnostics(filled_collector(0), video_reading_head(), NUM_CLASSES, rank=0, seed=0)
    assert set(metrics) == expected_names(MODALITIES) | {"diag_time_s"}
