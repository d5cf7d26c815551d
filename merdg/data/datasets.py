"""Dataset readers by name: each turns a ``DataConfig`` into a clip table and its domains and classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from merdg.config import DataConfig
from merdg.data.clips import Clip, DatasetError


@dataclass
class DatasetInfo:
    """A dataset's clip table with its domain and class names."""

    name: str
    root: Path
    domains: tuple[str, ...]
    class_names: tuple[str, ...]
    clips: list[Clip]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, Callable[[DataConfig], DatasetInfo]] = {}
"""Dataset readers by name (the values of ``--data.dataset``)."""


def register_dataset(name: str) -> Callable[[Callable[[DataConfig], DatasetInfo]], Callable[[DataConfig], DatasetInfo]]:
    """Register a dataset reader under ``name``."""

    def decorator(reader: Callable[[DataConfig], DatasetInfo]) -> Callable[[DataConfig], DatasetInfo]:
        DATASETS[name] = reader
        return reader

    return decorator


def _check_domains(requested: list[str] | None, available: tuple[str, ...], where: Path) -> tuple[str, ...]:
    if requested is None:
        return available
    unknown = [domain for domain in requested if domain not in available]
    if unknown:
        raise DatasetError(f"invalid --data.domains: {unknown} not in the dataset at {where}; available: {list(available)}")
    return tuple(requested)


@register_dataset("hac")
def load_hac(cfg: DataConfig) -> DatasetInfo:
    """Read a HAC-layout tree (human, animal, cartoon; 7 classes) at ``cfg.root``."""
    from merdg.data.hac import HAC_CLASSES, HAC_DOMAINS, read_hac

    if cfg.root is None:
        raise DatasetError("--data.root is required for --data.dataset hac (the folder holding human/, animal/, cartoon/)")
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetError(f"HAC root not found: {root} (set --data.root to the folder holding human/, animal/, cartoon/)")
    domains = _check_domains(cfg.domains, HAC_DOMAINS, root)
    clips = read_hac(root, domains=domains, splits_dir=cfg.splits_dir, num_classes=len(HAC_CLASSES))
    return DatasetInfo("hac", root, domains, tuple(HAC_CLASSES), clips)


@register_dataset("benchmark")
def load_benchmark(cfg: DataConfig) -> DatasetInfo:
    """Generate the embedded benchmark on first use (cached by its knobs) and read it like HAC."""
    from merdg.data.benchmark import ensure_benchmark
    from merdg.data.hac import read_hac

    info = ensure_benchmark(cfg.benchmark, cfg.cache_dir, root=cfg.root)
    domains = _check_domains(cfg.domains, tuple(info.domains), info.root)
    clips = read_hac(info.root, domains=domains, num_classes=info.num_classes)
    return DatasetInfo("benchmark", Path(info.root), domains, tuple(info.class_names), clips)


def load_dataset(cfg: DataConfig) -> DatasetInfo:
    """Read the dataset named by ``cfg.dataset``."""
    if cfg.dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {cfg.dataset!r}; registered: {sorted(DATASETS)}")
    return DATASETS[cfg.dataset](cfg)
