"""Dataset readers by name: each turns a ``DataConfig`` into a clip table and its domains and classes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from merdg.config import DataConfig
from merdg.data.clips import Clip, DatasetError

logger = logging.getLogger(__name__)

MAX_INFERRED_CLASSES = 10000
"""Most classes a manifest's labels may imply when --data.class_names is not given."""


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


@register_dataset("epic")
def load_epic(cfg: DataConfig) -> DatasetInfo:
    """Read an EPIC-Kitchens tree with the MM-SADA splits (D1, D2, D3; 8 verbs) at ``cfg.root``."""
    from merdg.data.epic import EPIC_CLASSES, EPIC_DOMAINS, read_epic

    if cfg.root is None:
        raise DatasetError(
            "--data.root is required for --data.dataset epic (the folder holding rgb/ and flow/, "
            "or video/, flow/ and audio/ with --data.epic_layout segments)"
        )
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetError(f"EPIC-Kitchens root not found: {root}; set --data.root to the dataset folder")
    domains = _check_domains(cfg.domains, EPIC_DOMAINS, root)
    clips = read_epic(root, domains=domains, splits_dir=cfg.splits_dir, layout=cfg.epic_layout)
    return DatasetInfo("epic", root, domains, tuple(EPIC_CLASSES), clips)


@register_dataset("manifest")
def load_manifest(cfg: DataConfig) -> DatasetInfo:
    """Read the clip table at ``cfg.manifest`` (CSV or Parquet) as a dataset."""
    from merdg.data.manifest import manifest_domains, read_manifest

    if cfg.manifest is None:
        raise DatasetError(
            "--data.manifest is required for --data.dataset manifest (a .csv or .parquet clip table)"
        )
    all_clips = read_manifest(cfg.manifest)
    available = manifest_domains(all_clips)
    domains = _check_domains(cfg.domains, available, Path(cfg.manifest))
    clips = [clip for clip in all_clips if clip.domain in domains]
    num_classes = max(clip.label for clip in all_clips) + 1 if all_clips else 0
    if cfg.class_names is None and num_classes > MAX_INFERRED_CLASSES:
        worst = max(all_clips, key=lambda clip: clip.label)
        raise DatasetError(
            f"{worst.source}, row {worst.row}: label {worst.label} would make {num_classes} classes; "
            f"fix the label, or list the class names with --data.class_names"
        )
    if cfg.class_names is not None:
        if num_classes > len(cfg.class_names):
            worst = max(all_clips, key=lambda clip: clip.label)
            raise DatasetError(
                f"{worst.source}, row {worst.row}: label {worst.label} is outside [0, {len(cfg.class_names)}) "
                f"given by --data.class_names; fix the label or list more class names"
            )
        class_names = tuple(cfg.class_names)
    else:
        class_names = tuple(str(label) for label in range(num_classes))
    if len(class_names) < 2:
        raise DatasetError(
            f"manifest {cfg.manifest}: its labels give {len(class_names)} class; at least 2 are needed"
        )
    unused = sorted(set(range(len(class_names))) - {clip.label for clip in all_clips})
    if unused:
        listed = ", ".join(map(str, unused[:20]))
        if len(unused) > 20:
            listed += f" and {len(unused) - 20} more"
        logger.warning("manifest %s: no clip has the label(s) %s", cfg.manifest, listed)
    return DatasetInfo("manifest", Path(cfg.manifest).parent, domains, class_names, clips)


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
