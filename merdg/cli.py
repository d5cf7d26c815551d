"""Command-line and YAML parsing of ``JobConfig`` (jsonargparse, from the dataclasses' types and docstrings)."""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from merdg.config import ConfigError, JobConfig

set_parsing_settings(docstring_parse_attribute_docstrings=True)


def build_parser(prog: str, description: str | None = None) -> ArgumentParser:
    """Return a parser with one flag per ``JobConfig`` field and ``--config FILE`` for YAML."""
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(JobConfig, nested_key=None, fail_untyped=True)
    return parser


def parse_job(argv: Sequence[str] | None, *, prog: str, description: str | None = None) -> JobConfig:
    """Parse flags and config files into a validated ``JobConfig``; exit with a message on errors."""
    parser = build_parser(prog, description)
    namespace = parser.parse_args(list(argv) if argv is not None else None)
    namespace.pop("config", None)
    try:
        return JobConfig(**parser.instantiate(namespace).as_dict())
    except TypeError as error:
        parser.exit(2, f"{prog}: error: invalid configuration: {error}; each group (data, train, ...) "
                       "must be a mapping of its options\n")
        raise
    except ConfigError as error:
        parser.exit(2, f"{prog}: error: {error}\n")
        raise  # parser.exit does not return; this line satisfies type checkers.
