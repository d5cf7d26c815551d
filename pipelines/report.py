"""Print a sweep's results tables, rebuilt from the MLflow tracking store alone.

    python pipelines/report.py                                   # newest sweep in ./merdg_runs
    python pipelines/report.py --tracking_uri http://127.0.0.1:5000 --sweep_run_id <id> --csv out.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking_uri", help="MLflow tracking URI (default: the local store in --output_dir)")
    parser.add_argument("--output_dir", type=Path, default=Path("merdg_runs"),
                        help="output folder of the main job, whose mlflow.db is read (default: ./merdg_runs)")
    parser.add_argument("--experiment", default="merdg",
                        help="--tracking.experiment of the sweep; its experiments are named <experiment>-<sweep id> "
                             "(default: merdg)")
    parser.add_argument("--sweep_run_id", help="run id of the sweep to report (default: the newest sweep)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV to this file")
    args = parser.parse_args(argv)

    from merdg.tracking import default_tracking_uri
    from merdg.tuning.report import ReportError, read_sweep
    from merdg.tuning.results import results_csv, results_markdown

    tracking_uri = args.tracking_uri
    if tracking_uri is None:
        database = args.output_dir / "mlflow.db"
        if not database.is_file():
            parser.exit(2, f"report.py: error: no MLflow store at {database}; set --output_dir or --tracking_uri\n")
        tracking_uri = default_tracking_uri(args.output_dir)
    try:
        report = read_sweep(tracking_uri, args.experiment, args.sweep_run_id)
    except ReportError as error:
        parser.exit(2, f"report.py: error: {error}\n")
    print(results_markdown(report.results, report.selection_label, report.title), end="")
    if report.unfinished:
        print(f"\n{report.unfinished} cell(s) of this sweep have not finished and are left out.")
    if args.csv:
        args.csv.write_text(results_csv(report.results, report.selection_label), encoding="utf-8")
        print(f"\nCSV written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
