"""Loading of the published checkpoint files into the backbones, strict by default.

A strict load requires the file to hold every tensor of the backbone, each with the backbone's
shape, and nothing else besides the classifier-head tensors, which are dropped (the encoder ends
at the pooled embedding). A non-strict load, requested by name, loads the tensors that fit and
logs every tensor it leaves at random initialisation. The MER-DG code loads the audio checkpoint
non-strictly without a message, and so leaves its ``layer4`` random.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from merdg.models.backbones.base import Backbone, CheckpointFormat

logger = logging.getLogger(__name__)

MAX_LISTED_KEYS = 20
"""Tensor names listed per category in an error or log message; the rest are counted."""

DDP_PREFIX = "module."
"""Prefix that a model saved while wrapped in (Distributed)DataParallel puts on every tensor name."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its backbone; the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A strict load found tensors missing from, unexpected in, or of the wrong shape in a checkpoint."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """Outcome of loading a checkpoint, by tensor name as the file spells it (with its prefix)."""

    source: str
    """The file, or a description of the mapping that was loaded."""
    loaded: list[str] = field(default_factory=list)
    """Tensors copied into the backbone."""
    missing: list[str] = field(default_factory=list)
    """Backbone tensors the file lacks; a non-strict load leaves them at their initial values."""
    unexpected: list[str] = field(default_factory=list)
    """File tensors that are neither the backbone's nor the classifier head's; a non-strict load ignores them."""
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    """Tensors whose shape differs, as (shape in the file, shape in the backbone); a non-strict load skips them."""
    dropped_head: list[str] = field(default_factory=list)
    """Classifier-head tensors of the file, which are not part of the encoder."""

    @property
    def complete(self) -> bool:
        """Whether every backbone tensor was loaded and nothing else was found."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe_problems(self) -> str:
        """Return the missing, unexpected and mismatched tensors as lines of text."""
        lines = []
        if self.missing:
            lines.append(f"missing from the file ({len(self.missing)}): {_list_names(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected in the file ({len(self.unexpected)}): {_list_names(self.unexpected)}")
        if self.mismatched:
            listed = [
                f"{name} (file {list(file_shape)}, backbone {list(model_shape)})"
                for name, (file_shape, model_shape) in self.mismatched.items()
            ]
            lines.append(f"wrong shape ({len(listed)}): {_list_names(listed)}")
        return "\n".join(lines)


def _list_names(names: list[str]) -> str:
    listed = ", ".join(names[:MAX_LISTED_KEYS])
    if len(names) > MAX_LISTED_KEYS:
        listed += f", ... and {len(names) - MAX_LISTED_KEYS} more"
    return listed


def checkpoint_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    """Return the backbone's state dict under the tensor names of its published checkpoint file."""
    prefix = backbone.checkpoint_format.prefix
    return {prefix + name: tensor for name, tensor in backbone.state_dict().items()}


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read a checkpoint file with ``torch.load(..., weights_only=True)`` onto the CPU.

    ``weights_only`` refuses to run code from the file, so a file that pickles other objects than
    tensors and plain containers raises CheckpointError, whose message explains how to load a trusted file.
    """
    # NOTE: untested whether the extra entries of the published files (mmaction2's 'meta') pass
    # weights_only=True. A file whose entries do not raises the CheckpointError below, with the fix.
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}; pass the path of an existing weights file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {reason}. If the file is a "
            "checkpoint you trust whose extra entries hold other objects than tensors, load it with "
            "torch.load(path, map_location='cpu', weights_only=False) and pass the result to "
            "merdg.models.backbones.load_backbone_state; otherwise check that the path names a weights file"
        ) from error
    except (RuntimeError, EOFError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {error}; the file is truncated or not a PyTorch checkpoint"
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"invalid checkpoint {path}: it contains a {type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint


def load_backbone_checkpoint(backbone: Backbone, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load the published checkpoint file at ``path`` into ``backbone`` and return what was loaded.

    With ``strict`` (the default), raise CheckpointMismatchError, listing the tensors missing from
    the file, unexpected in it and of the wrong shape, unless the file fits exactly. With
    ``strict=False``, load the tensors that fit and log a warning naming the others.
    """
    return load_backbone_state(backbone, read_checkpoint(path), source=str(path), strict=strict)


def load_backbone_state(
    backbone: Backbone, checkpoint: Mapping[str, Any], *, source: str, strict: bool = True
) -> LoadReport:
    """Load an already read checkpoint into ``backbone``; ``source`` names it in messages.

    ``checkpoint`` is the file's top-level dict, as ``torch.load`` returns it, or its inner state
    dict. Keys that all start with "module." (a model saved inside DataParallel) lose that prefix.
    The other rules are those of ``load_backbone_checkpoint``.
    """
    checkpoint_format = backbone.checkpoint_format
    state = _strip_ddp_prefix(_unwrap_state_dict(checkpoint, checkpoint_format, source), source)
    report = _match_tensors(backbone, state, source)
    if report.dropped_head:
        logger.info(
            "dropped %d classifier-head tensors (%s) of %s: the encoder ends at the pooled embedding",
            len(report.dropped_head),
            ", ".join(checkpoint_format.head_prefixes),
            source,
        )

    if not report.complete and strict:
        raise CheckpointMismatchError(
            f"checkpoint {source} does not fit {type(backbone).__name__}, which expects the "
            f"{checkpoint_format.project} file {checkpoint_format.published_file}:\n{report.describe_problems()}\n"
            "Pass the right file, or load non-strictly (strict=False, or --model.strict_load false) to "
            "keep the listed backbone tensors at random initialisation",
            report,
        )

    prefix = checkpoint_format.prefix
    fitting = {name[len(prefix):]: state[name] for name in report.loaded}
    backbone.load_state_dict(fitting, strict=False)
    if not report.complete:
        logger.warning(
            "non-strict load of %s into %s: %d of %d backbone tensors loaded; the others keep their random "
            "initialisation.\n%s",
            source,
            type(backbone).__name__,
            len(report.loaded),
            len(backbone.state_dict()),
            report.describe_problems(),
        )
    return report


def _unwrap_state_dict(checkpoint: Mapping[str, Any], checkpoint_format: CheckpointFormat, source: str) -> Mapping[str, Any]:
    key = checkpoint_format.state_dict_key
    if key in checkpoint:
        state = checkpoint[key]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"checkpoint {source}: entry {key!r} is a {type(state).__name__}, not a dict of tensors")
    elif checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError(
            f"checkpoint {source} has no {key!r} entry, where {checkpoint_format.project} files keep the weights; "
            f"its top-level keys are {sorted(map(str, checkpoint))[:MAX_LISTED_KEYS]}. "
            f"Pass the {checkpoint_format.project} file {checkpoint_format.published_file}"
        )
    not_tensors = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {source}: entries that are not tensors: {_list_names(not_tensors)}")
    return state


def _strip_ddp_prefix(state: Mapping[str, torch.Tensor], source: str) -> Mapping[str, torch.Tensor]:
    if state and all(name.startswith(DDP_PREFIX) for name in state):
        logger.info("removed the prefix %r from every tensor name of %s", DDP_PREFIX, source)
        return {name[len(DDP_PREFIX):]: tensor for name, tensor in state.items()}
    return state


def _match_tensors(backbone: Backbone, state: Mapping[str, torch.Tensor], source: str) -> LoadReport:
    """Compare the file's tensors with the backbone's by name (with prefix) and shape."""
    checkpoint_format = backbone.checkpoint_format
    expected = {name: tuple(tensor.shape) for name, tensor in checkpoint_state_dict(backbone).items()}
    report = LoadReport(source=source)
    for name, tensor in state.items():
        if name.startswith(checkpoint_format.head_prefixes):
            report.dropped_head.append(name)
        elif name not in expected:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != expected[name]:
            report.mismatched[name] = (tuple(tensor.shape), expected[name])
        else:
            report.loaded.append(name)
    report.missing = [name for name in expected if name not in state]
    return report
