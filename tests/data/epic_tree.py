"""Build small EPIC-Kitchens trees from real media, in the frame and the segment layout.

The trees use real rows of the MM-SADA split pickles (uids, video ids, frame spans,
timestamps and verb labels), written back as pickles of the selected rows. Real media
replaces the EPIC videos, which are not redistributable:

- RGB frames: mmaction2's real frames img_00001.jpg to img_00010.jpg, symlinked in turn under
  every frame name of a segment's span;
- flow: mmaction2's stored flow JPEGs x_0000N.jpg (as u) and y_0000N.jpg (as v), symlinked the
  same way, or, in the segment layout, encoded as grayscale videos that last as long as the
  segment's video;
- video segments: opencv's box.mp4 and cup.mp4 in turn;
- audio: the 10 s, 16 kHz VGGSound example wav as every video's wav, so only rows that end
  within its first 9.5 s are chosen.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from merdg.data.epic import EPIC_DOMAINS, FRAME_PATTERN, flow_index, load_split_pickle, parse_timestamp
from tests.data.real_tree import _read_flow_images, rate_for_duration, video_duration, write_gray_video

SPLITS_DIR = "MM-SADA_Domain_Adaptation_Splits"
WAV = "vggsound-example-audio/FwVYUHKoLtQ_000034.wav"
RGB_IMAGES = 10
"""Real RGB frames in mmaction2-test-data/imgs."""
FLOW_IMAGES = 5
"""Real stored flow frames per axis in mmaction2-test-data/imgs."""
SEGMENT_VIDEOS = ("opencv-doc-media/box.mp4", "opencv-doc-media/cup.mp4")
MAX_STOP_SECONDS = 9.5


def choose_rows(shared_data: Path, domain: str, split: str, count: int) -> pd.DataFrame:
    """Return ``count`` real rows of a split pickle that end within the stand-in wav."""
    frame = load_split_pickle(shared_data / SPLITS_DIR / f"{domain}_{split}.pkl")
    stops = frame["stop_timestamp"].map(parse_timestamp)
    return frame[stops < MAX_STOP_SECONDS].head(count).reset_index(drop=True)


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    os.symlink(source, target)


def build_real_epic_tree(shared_data: Path, root: Path, layout: str = "frames", rows_per_split: int = 2) -> Path:
    """Write an EPIC-Kitchens tree with real rows in ``layout`` ("frames" or "segments"); return its root.

    The split pickles of the chosen rows are written into the root.
    """
    shared_data = Path(shared_data)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = shared_data / "mmaction2-test-data" / "imgs"
    wav = shared_data / WAV
    flow_frames = None
    segment_count = 0

    for domain in EPIC_DOMAINS:
        for split in ("train", "test"):
            rows = choose_rows(shared_data, domain, split, rows_per_split)
            rows.to_pickle(root / f"{domain}_{split}.pkl")
            for row in rows.itertuples():
                first, last = int(row.start_frame), int(row.stop_frame)
                if layout == "frames":
                    folder = root / "rgb" / split / domain / row.video_id
                    for index in range(first, last + 1):
                        link(images / f"img_{(index - 1) % RGB_IMAGES + 1:05d}.jpg", folder / (FRAME_PATTERN % index))
                    flow = root / "flow" / split / domain / row.video_id
                    for index in range(flow_index(first), flow_index(last) + 1):
                        name = FRAME_PATTERN % index
                        position = (index - 1) % FLOW_IMAGES + 1
                        link(images / f"x_{position:05d}.jpg", flow / "u" / name)
                        link(images / f"y_{position:05d}.jpg", flow / "v" / name)
                    link(wav, root / "rgb" / split / domain / f"{row.video_id}.wav")
                else:
                    stem = f"{domain}_{row.video_id}_{first}_{last}_{int(row.verb_class)}"
                    source = shared_data / SEGMENT_VIDEOS[segment_count % len(SEGMENT_VIDEOS)]
                    segment_count += 1
                    link(source, root / "video" / split / domain / f"{stem}.mp4")
                    if flow_frames is None:
                        flow_frames = {axis: _read_flow_images(shared_data, axis) for axis in ("x", "y")}
                    flow = root / "flow" / split / domain
                    flow.mkdir(parents=True, exist_ok=True)
                    rate = rate_for_duration(FLOW_IMAGES, video_duration(source))
                    write_gray_video(flow_frames["x"], flow / f"{stem}_u.mp4", rate)
                    write_gray_video(flow_frames["y"], flow / f"{stem}_v.mp4", rate)
                    link(wav, root / "audio" / split / domain / f"{row.video_id}.wav")
    return root
