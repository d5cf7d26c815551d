"""Turn cached clip tensors into model inputs, with the MER-DG training-time augmentation.

Cached layouts: video (B, T, S, S, 3) uint8, flow (B, T, S, S, 2) uint8 with 128 = zero flow,
audio (B, F, frames) float32 z-scored log spectrogram, where S is the modality's ``frame_size``.
Model layouts: video (B, 3, T, C, C) normalised with the ImageNet mean and std, flow
(B, 2, T, C, C) as (x - 128) / 128, audio (B, 1, F, frames), where C is the modality's
``crop_size``.

In evaluation, video and flow are centre-cropped to ``crop_size`` and audio is left unchanged.
In training, each sample gets:

- one random resized crop box (mmaction2's ``RandomResizedCrop`` and torchvision's defaults:
  area 8% to 100% of the frame, aspect ratio 3/4 to 4/3 drawn log-uniformly, 10 attempts, then
  the centre square), the same for every frame. The box is resized to ``crop_size`` with bilinear
  interpolation without antialiasing, as mmcv's OpenCV resize does.
- a horizontal flip with probability 0.5. A mirrored flow's x component is negated.
- audio: uniform noise in [-a, a) on every bin, with a = ``noise_amplitude``, then
  ``freq_mask_rows`` consecutive frequency rows set to zero from a row drawn from
  [0, F - 1 - rows), as the official MER-DG code draws it (``np.random.choice(256 - 9)`` for
  F = 257), so the last rows are never masked.

The video and the flow of one sample share the crop box (as fractions of the frame) and the flip,
so the flow field stays aligned with the RGB view it describes.
NOTE: the official MER-DG code (on SimMMDG's data loaders) runs a separate mmaction2 pipeline per
modality, so its crops and flips are drawn independently for video and flow. It also crops from
the whole short-side-256 frame, whereas the cache here stores only its centre square. Its flow
is cropped to 224 pixels in training and 256 in evaluation, whereas here both use ``crop_size``.

Every random draw comes from the ``generator`` passed to ``prepare_inputs``, so a seeded generator
gives the same augmentation on every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from merdg.config import AudioDecodeConfig, DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FLIP_PROBABILITY = 0.5
"""Probability that a training sample is mirrored horizontally."""
CROP_AREA_RANGE = (0.08, 1.0)
"""Area of a random resized crop as a fraction of the frame (mmaction2 and torchvision default)."""
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
"""Width / height of a random resized crop, drawn log-uniformly (mmaction2 and torchvision default)."""
CROP_ATTEMPTS = 10
"""Boxes drawn before a random resized crop falls back to the centre square."""

_SPATIAL_MODALITIES = ("video", "flow")


@dataclass(frozen=True)
class CropBox:
    """A crop rectangle in pixels: rows [top, top + height), columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int

    def rescaled(self, factor: float, size: int) -> CropBox:
        """Return the same region of a square frame of side ``size`` that is ``factor`` times as large."""
        height = min(size, max(1, round(self.height * factor)))
        width = min(size, max(1, round(self.width * factor)))
        top = min(size - height, round(self.top * factor))
        left = min(size - width, round(self.left * factor))
        return CropBox(top, left, height, width)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Return an integer drawn uniformly from [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def random_resized_crop_box(height: int, width: int, generator: torch.Generator | None = None) -> CropBox:
    """Draw a random resized crop box in a ``height`` x ``width`` frame.

    Each attempt draws an area fraction uniformly from ``CROP_AREA_RANGE`` and an aspect ratio
    log-uniformly from ``CROP_ASPECT_RANGE``, rounds the box's sides, and keeps the first box that
    fits, at a uniformly drawn position. After ``CROP_ATTEMPTS`` misses it returns the centre
    square of the short side.
    """
    log_low, log_high = math.log(CROP_ASPECT_RANGE[0]), math.log(CROP_ASPECT_RANGE[1])
    for _ in range(CROP_ATTEMPTS):
        area = height * width * _uniform(*CROP_AREA_RANGE, generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        crop_width = round(math.sqrt(area * aspect))
        crop_height = round(math.sqrt(area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = _randint(0, height - crop_height, generator)
            left = _randint(0, width - crop_width, generator)
            return CropBox(top, left, crop_height, crop_width)
    side = min(height, width)
    return CropBox((height - side) // 2, (width - side) // 2, side, side)


def center_crop(clips: torch.Tensor, size: int) -> torch.Tensor:
    """Return the centre ``size`` x ``size`` window of clips shaped (..., H, W).

    The offsets are ``(H - size) // 2`` and ``(W - size) // 2``, as mmaction2's ``CenterCrop`` takes
    them.
    """
    height, width = clips.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the {height} x {width} frames. Lower the crop size")
    top, left = (height - size) // 2, (width - size) // 2
    return clips[..., top : top + size, left : left + size]


def resized_crop(clip: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """Cut ``box`` out of every frame of one clip (C, T, H, W) and resize it to (C, T, size, size)."""
    window = clip[..., box.top : box.top + box.height, box.left : box.left + box.width]
    if box.height == size and box.width == size:
        return window
    return F.interpolate(window, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def augment_spectrograms(
    audio: torch.Tensor, cfg: AudioDecodeConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add uniform noise and zero a band of frequency rows in each spectrogram of (B, 1, F, frames).

    Returns a new tensor; the noise is drawn on the CPU so that a CPU generator seeds it on any device.
    """
    num_rows = audio.shape[-2]
    augmented = audio.clone()
    if cfg.noise_amplitude > 0:
        noise = torch.rand(audio.shape, generator=generator, dtype=audio.dtype)
        augmented += ((2.0 * noise - 1.0) * cfg.noise_amplitude).to(audio.device)
    if cfg.freq_mask_rows > 0:
        positions = num_rows - 1 - cfg.freq_mask_rows
        if positions < 1:
            raise ValueError(
                f"cannot mask {cfg.freq_mask_rows} frequency rows of a spectrogram with {num_rows} rows. "
                f"Lower --data.audio.freq_mask_rows to at most {num_rows - 2}"
            )
        starts = torch.randint(0, positions, (audio.shape[0],), generator=generator)
        for sample, start in enumerate(starts.tolist()):
            augmented[sample, ..., start : start + cfg.freq_mask_rows, :] = 0.0
    return augmented


def _video_to_input(video: torch.Tensor) -> torch.Tensor:
    x = video.permute(0, 4, 1, 2, 3).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def _flow_to_input(flow: torch.Tensor) -> torch.Tensor:
    return (flow.permute(0, 4, 1, 2, 3).float() - 128.0) / 128.0


def _random_resized_crops(inputs: dict[str, torch.Tensor], cfg: DataConfig, generator: torch.Generator | None) -> None:
    """Replace video and flow by one random resized crop per sample, the same region in both."""
    present = [modality for modality in _SPATIAL_MODALITIES if modality in inputs]
    if not present:
        return
    reference_size = inputs[present[0]].shape[-1]
    crops: dict[str, list[torch.Tensor]] = {modality: [] for modality in present}
    for sample in range(inputs[present[0]].shape[0]):
        box = random_resized_crop_box(reference_size, reference_size, generator)
        for modality in present:
            clip = inputs[modality][sample]
            size = clip.shape[-1]
            scaled = box if size == reference_size else box.rescaled(size / reference_size, size)
            crops[modality].append(resized_crop(clip, scaled, getattr(cfg, modality).crop_size))
    for modality in present:
        inputs[modality] = torch.stack(crops[modality])


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
    cfg: DataConfig,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Convert one batch of cached tensors to model inputs keyed by modality.

    ``cfg`` supplies the crop sizes and the audio augmentation. With ``train`` set, the
    augmentation in the module docstring is applied, drawing from ``generator`` (the global torch
    generator when None). Otherwise video and flow are centre-cropped.

    Raises:
        KeyError: the batch has no column for a requested modality.
        ValueError: a cached frame is smaller than its crop size, or a modality is unknown.
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

    for modality in _SPATIAL_MODALITIES:
        if modality in inputs and inputs[modality].shape[-1] < getattr(cfg, modality).crop_size:
            raise ValueError(
                f"cached {modality} frames are {inputs[modality].shape[-1]} pixels, smaller than "
                f"--data.{modality}.crop_size={getattr(cfg, modality).crop_size}. Lower the crop size or "
                f"decode again with a larger --data.{modality}.frame_size"
            )

    if not train:
        for modality in _SPATIAL_MODALITIES:
            if modality in inputs:
                inputs[modality] = center_crop(inputs[modality], getattr(cfg, modality).crop_size)
        return inputs

    size = next(iter(inputs.values())).shape[0]
    flip = torch.rand(size, generator=generator) < FLIP_PROBABILITY
    _random_resized_crops(inputs, cfg, generator)
    _flip_horizontally(inputs, flip.to(next(iter(inputs.values())).device))
    if "audio" in inputs:
        inputs["audio"] = augment_spectrograms(inputs["audio"], cfg.audio, generator)
    return inputs
