"""Write the clip table of any dataset reader as a manifest (CSV or Parquet).

A manifest is the generic input of merdg (``--data.dataset manifest``): one row per clip with its
domain, split, label, media paths and spans. Converting once lets a dataset be edited, filtered
or shared as a table, and lets the EPIC-Kitchens split pickles be read without unpickling again.

    python pipelines/make_manifest.py --config configs/epic.yaml --out epic.parquet
    python pipelines/make_manifest.py --data.dataset hac --data.root /data/HAC --out hac.csv
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from merdg.cli import build_parser
from merdg.config import ConfigError, JobConfig


def main(argv: list[str] | None = None) -> int:
    # The main job's parser, so that its flags and config files work here unchanged; only the
    # data section is used.
    parser = build_parser("make_manifest.py", __doc__)
    parser.add_argument("--out", type=Path, required=True, help="manifest file to write (.csv or .parquet)")
    namespace = parser.parse_args(argv)
    out = namespace.pop("out")
    namespace.pop("config", None)

    from merdg.data.clips import DatasetError
    from merdg.data.datasets import load_dataset
    from merdg.data.manifest import write_manifest

    if out.suffix.lower() not in (".csv", ".parquet"):
        parser.error(f"--out {out}: use a .csv or .parquet file name")
    try:
        job = JobConfig(**parser.instantiate(namespace).as_dict())
        info = load_dataset(job.data)
    except (ConfigError, DatasetError) as error:
        print(f"make_manifest.py: error: {error}", file=sys.stderr)
        return 2
    try:
        write_manifest(info.clips, out)
    except OSError as error:
        print(f"make_manifest.py: error: cannot write --out {out}: {error.strerror or error}", file=sys.stderr)
        return 2
    counts = Counter((clip.domain, clip.split) for clip in info.clips)
    summary = ", ".join(f"{domain}/{split} {count}" for (domain, split), count in sorted(counts.items()))
    print(f"wrote {len(info.clips)} clips of {info.name} ({summary}) to {out}")
    class_names = json.dumps(list(info.class_names))
    print(f"read it with: --data.dataset manifest --data.manifest {out} --data.class_names '{class_names}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
