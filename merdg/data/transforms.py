"""Turn cached clip tensors into model inputs, with the training-time augmentation.

Cached layouts: video (B, T, H, W, 3) uint8, flow (B, T, H, W, 2) uint8 with 128 = zero flow,
audio (B, F, frames) float32 log spectrogram. Model layouts: video (B, 3, T, H, W) normalised
with the ImageNet mean and std, flow (B, 2, T, H, W) as (x - 128) / 128, audio (B, 1, F, frames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _video_to_input(video: torch.Tensor) -> torch.Tensor:
    x = video.permute(0, 4, 1, 2, 3).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def _flow_to_input(flow: torch.Tensor) -> torch.Tensor:
    return (flow.permute(0, 4, 1, 2, 3).float() - 128.0) / 128.0


def _flip_horizontally(inputs: dict[str, torch.Tensor], flip: torch.Tensor) -> None:
    """Mirror the selected samples of video and flow in place; a mirrored flow's x is negated."""
    if not bool(flip.any()):
        return
    if "video" in inputs:
        video = inputs["video"]
        video[flip] = video[flip].flip(-1)
    if "flow" in inputs:
        flow = inputs["flow"]
        mirrored = flow[flip].flip(-1)
        mirrored[:, 0] = -mirrored[:, 0]
        flow[flip] = mirrored


def prepare_inputs(
    batch: Mapping[str, torch.Tensor],
    modalities: Sequence[str],
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Convert one batch of cached tensors to model inputs keyed by modality.

    With ``train`` set, each sample is mirrored horizontally with probability 0.5, the same way
    in every modality of that sample.
    """
    inputs: dict[str, torch.Tensor] = {}
    for modality in modalities:
        if modality not in batch:
            raise KeyError(f"batch lacks modality {modality!r}; columns: {sorted(batch)}")
        if modality == "video":
            inputs[modality] = _video_to_input(batch[modality])
        elif modality == "flow":
            inputs[modality] = _flow_to_input(batch[modality])
        elif modality == "audio":
            inputs[modality] = batch[modality].float().unsqueeze(1)
        else:
            raise ValueError(f"unknown modality {modality!r}")
    if train:
        size = next(iter(inputs.values())).shape[0]
        flip = torch.rand(size, generator=generator) < 0.5
        _flip_horizontally(inputs, flip.to(next(iter(inputs.values())).device))
    return inputs
