"""Reader of the HAC (human, animal, cartoon) dataset layout.

Split files are ``HAC_{train,test}_only_{domain}.csv``: no header, one ``<file>.mp4,<label>``
row per clip, CRLF line ends. Media lives under the dataset root::

    ROOT/<domain>/videos/<file>.mp4
    ROOT/<domain>/flow/<stem>_flow_x.mp4, <stem>_flow_y.mp4   (grayscale video, 128 = zero flow)
    ROOT/<domain>/audio/<stem>.wav                             (16 kHz mono)

Some human clips are listed in both the train and the test file of their domain, 24 in the
published splits and with the same label. Each row becomes its own clip.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from merdg.data.clips import Clip, DatasetError

logger = logging.getLogger(__name__)

HAC_DOMAINS = ("human", "animal", "cartoon")
"""Domain names of HAC, which are also the folder names under the dataset root."""

HAC_CLASSES = ("sleeping", "watching TV", "eating", "drinking", "swimming", "running", "opening door")
"""Class names of HAC, indexed by label."""

DEFAULT_SPLIT_PATTERN = "HAC_{split}_only_{domain}.csv"
"""File name of a split list, where ``{split}`` is train or test and ``{domain}`` a domain name."""


def read_split_csv(path: str | os.PathLike, num_classes: int) -> list[tuple[str, int, int]]:
    """Read a HAC split file into (file name, label, 1-based row number) tuples.

    Each line is split at its last comma, so file names may contain spaces and commas. CRLF and
    LF line ends are both accepted, a UTF-8 byte-order mark is dropped, and blank lines are
    skipped. An empty file is logged as a warning and gives no rows.

    Raises:
        DatasetError: the file is missing or unreadable, a row has no comma or an empty file
            name, a label is not an integer, or a label is outside [0, num_classes).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {path}; check --data.splits_dir (or --data.root)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from None

    rows: list[tuple[str, int, int]] = []
    for row_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        file_name, comma, label_text = line.rpartition(",")
        if not comma or not file_name.strip():
            raise DatasetError(
                f"{path}, row {row_number}: malformed row {line!r}; expected '<file name>,<label>'"
            )
        try:
            label = int(label_text.strip())
        except ValueError:
            raise DatasetError(
                f"{path}, row {row_number}: label {label_text.strip()!r} is not an integer; "
                f"expected '<file name>,<label>' with a label in [0, {num_classes})"
            ) from None
        if not 0 <= label < num_classes:
            raise DatasetError(
                f"{path}, row {row_number}: label {label} is outside [0, {num_classes}); "
                f"fix the label in that row"
            )
        rows.append((file_name, label, row_number))
    if not rows:
        logger.warning("split file %s lists no clips", path)
    return rows


def read_hac(
    root: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    splits_dir: str | os.PathLike | None = None,
    num_classes: int = len(HAC_CLASSES),
    split_pattern: str = DEFAULT_SPLIT_PATTERN,
    splits: Sequence[str] = ("train", "test"),
) -> list[Clip]:
    """Return one clip per row of the split files of ``domains`` under a HAC-layout root.

    ``splits_dir`` contains the split files (default: ``root``). Clip ids are
    ``<domain>/<split>/<stem>``, unique even for a clip listed in both splits. Media paths are
    absolute and are not checked here: a missing file is reported when the clip is decoded.

    Raises:
        DatasetError: a domain folder or a split file is missing, a split file is invalid, one
            split file lists a file stem twice (two rows would share a clip id), or the split
            files of a domain list no clip at all.
    """
    root = Path(root).resolve()
    split_folder = Path(splits_dir).resolve() if splits_dir is not None else root
    domains = tuple(domains) if domains is not None else HAC_DOMAINS

    clips: list[Clip] = []
    first_rows: dict[str, int] = {}
    for domain in domains:
        domain_dir = root / domain
        if not domain_dir.is_dir():
            raise DatasetError(
                f"domain folder not found: {domain_dir}; --data.root must contain one folder per domain "
                f"({', '.join(domains)}), each with videos/, flow/ and audio/"
            )
        split_files = [split_folder / split_pattern.format(split=split, domain=domain) for split in splits]
        num_before = len(clips)
        for split, csv_path in zip(splits, split_files):
            for file_name, label, row in read_split_csv(csv_path, num_classes):
                clip = _make_clip(domain_dir, domain, split, file_name, label, csv_path, row)
                if clip.clip_id in first_rows:
                    raise DatasetError(
                        f"{csv_path}, row {row}: duplicate clip {file_name!r}: the file stem {Path(file_name).stem!r} "
                        f"is already listed at row {first_rows[clip.clip_id]}; list each clip once per split file"
                    )
                first_rows[clip.clip_id] = row
                clips.append(clip)
        if len(clips) == num_before:
            raise DatasetError(
                f"domain {domain!r} has no clips: its split files {', '.join(map(str, split_files))} list no rows; "
                "fill them, or leave the domain out with --data.domains"
            )
        logger.debug("HAC domain %s: %d clips so far", domain, len(clips))
    return clips


def _make_clip(
    domain_dir: Path, domain: str, split: str, file_name: str, label: int, csv_path: Path, row: int
) -> Clip:
    stem = Path(file_name).stem
    return Clip(
        clip_id=f"{domain}/{split}/{stem}",
        domain=domain,
        split=split,
        label=label,
        video=str(domain_dir / "videos" / file_name),
        audio=str(domain_dir / "audio" / f"{stem}.wav"),
        flow_x=str(domain_dir / "flow" / f"{stem}_flow_x.mp4"),
        flow_y=str(domain_dir / "flow" / f"{stem}_flow_y.mp4"),
        source=str(csv_path),
        row=row,
    )
