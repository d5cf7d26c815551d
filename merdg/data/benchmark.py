"""The embedded benchmark: a small multimodal domain-generalization dataset generated on first use.

Purpose
-------
The benchmark is a laptop-scale test bed for fusion overfitting, the failure MER-DG targets.
Separate video, audio and flow encoders trained end to end through a fusion head can each learn
cross-modal co-occurrences that hold only under the recording conditions of the source domains.
Such a model then fails on a new domain. The benchmark plants two signals:

* a class signal present in every modality, noisy enough that no single modality is near-perfect
  and invariant under the horizontal flips that training applies;
* a relational nuisance cue (``cue``) that is shared by the modalities but hidden in each one, so
  that only the fused embeddings reveal it, and whose meaning changes from domain to domain.

Layout on disk
--------------
The benchmark is written as real media in the HAC layout, so it goes through the same reader and
decoder as real data::

    ROOT/<domain>/videos/<stem>.mp4          H.264 yuv420p video, fps, frame_size square,
                                             num_frames frames, with an AAC track of the wav audio
    ROOT/<domain>/flow/<stem>_flow_x.mp4     flow as gray-in-luma H.264 (full-range yuv420p, neutral
    ROOT/<domain>/flow/<stem>_flow_y.mp4     chroma), pixel = clip(round(128 + FLOW_SCALE * flow))
    ROOT/<domain>/audio/<stem>.wav           16-bit PCM mono, sample_rate, num_frames / fps seconds
    ROOT/HAC_train_only_<domain>.csv         split lists: no header, rows "<stem>.mp4,<label>",
    ROOT/HAC_test_only_<domain>.csv          CRLF line ends (the HAC convention)
    ROOT/benchmark_manifest.csv              per-clip record of everything planted (see MANIFEST_FIELDS)
    ROOT/benchmark.json                      marker with the config and generator version, written last

Flow is in pixels per frame in image coordinates (x to the right, y down), one flow frame per
video frame: frame t contains the motion from frame t to t + 1. The flow videos are flagged full
range, so decoding them with PyAV as ``gray`` (or reading the luma plane) returns the stored
values. A limited-range flag would make ``gray`` decoding stretch them. Flow values outside
[-128, 127] / FLOW_SCALE are clipped when stored. Both kinds of video are encoded at a constant
quantizer (``VIDEO_QP``, ``FLOW_QP``), and the same config gives byte-identical files.

Domains
-------
Three domains differ only in recording conditions (``DOMAIN_STYLES`` holds the numbers):

* ``studio``: clean studio. Smooth grey-blue vertical gradient, saturated object colours, a disk,
  little sensor noise (std 2 levels). Audio timbre close to a sine (harmonics 1, 0.25) over weak
  white noise. Almost clean flow (std 0.05 pixel/frame).
* ``street``: outdoor street. A random brick texture in muted earth tones, muted object colours,
  a square, medium sensor noise (std 6). Sawtooth-like timbre (harmonic n at 1/n, n <= 6) over
  pink noise. Medium flow noise (std 0.2).
* ``retro``: old television. Sepia palette, dark scanlines on every second row and a vignette,
  warm object colours, a diamond, strong film grain (std 10). Square-wave timbre (odd harmonics
  at 1/n) over brown noise. Strong flow noise (std 0.4).

Class signal
------------
Class ``k`` of ``K`` moves an object at angle ``theta_k = pi * k / (K - 1)`` from straight up, so
the classes run from up, through horizontal, to down. The sign of the horizontal component is
random per clip, so a horizontal flip maps every clip to another valid clip of the same class.
The flow shows the object's velocity inside the object and zero elsewhere, plus the domain's flow
noise. The audio carries a tone at the class pitch ``PITCH_BASE_HZ * 2 ** (k * step)`` (``step``
is half an octave, or less so that the top class is at most 4 octaves above class 0) with the
domain's timbre.
``signal_noise`` scales the per-clip jitter: the angle gets Gaussian jitter of std
``signal_noise * (pi / (K - 1)) / 2`` (half the class spacing at 1), the pitch gets
``signal_noise * step / 2`` octaves, and the speed a log-normal factor of std ``0.3 * signal_noise``.

Nuisance cue
------------
Each domain ``d`` maps class ``k`` to one of ``K`` evenly spaced cue levels in [-1, 1]: the
levels are permuted once per seed, and domain ``d`` uses that permutation shifted cyclically by
``d``, so the three domains' mappings differ at every class (when ``K >= 3``). With probability
``cue_validity`` a clip's cue level is its domain's level for its class, otherwise a uniformly
drawn level. Each clip then draws hiding offsets ``n_video, n_audio, n_flow``: Gaussian, projected
to sum zero and scaled so that each has std ``cue_hiding * 2`` (``cue_hiding`` is in units of the
full cue range, 2). Each modality renders ``s_m = level + n_m``:

* video: a global brightness offset of ``VIDEO_BRIGHTNESS_SPAN / span * s_video`` levels on all
  three RGB channels;
* audio: a fixed hum at ``HUM_HZ`` with amplitude ``HUM_REF * exp(AUDIO_LOG_SPAN / span * s_audio)``,
  so its log-spectrogram level is linear in ``s_audio``;
* flow: a global vertical pan of ``FLOW_PAN_SPAN / span * s_flow`` pixels per frame added to flow y
  (vertical, so a horizontal flip leaves it unchanged).

The gains (``cue_gains``) divide each span by ``span = 1 + 3 * 2 * cue_hiding``, which bounds
``|s_m|`` in about 99.7 % of clips, so the rendered cue stays inside the pixel and sample range.
Measured on the default config (seed 0, 300 clips): no decoded video pixel at 0 or 255, no stored
flow value clipped, and an audio peak of at most 0.49. The hum's log-spectrogram level
(256-sample windows) fits a line in ``s_audio`` with R^2 between 0.95 and 0.98 per domain. It
flattens for the quietest hums, where the background noise dominates that frequency bin.

What a model can see of the cue depends on the modalities it is given:

* all three: ``s_video + s_audio + s_flow = 3 * level`` exactly, a linear readout of the
  concatenated embeddings;
* a pair, for example video and audio: ``s_video + s_audio = 2 * level - n_flow``, so the level is
  hidden under the third modality's offset (std ``2 * cue_hiding``);
* one modality: ``s_m = level + n_m``, hidden under its own offset.

With the defaults (``cue_hiding`` 1.5, so offsets of std 3 against levels 0.5 apart at ``K = 5``)
a single modality predicts the class from the cue barely above chance, and the three together
predict it at about ``cue_validity``.

No-cue twin
-----------
``cue=False`` writes the same benchmark for the same seed with the cue level set to 0: the class
signal, the domain conditions, every rendering draw and the hiding offsets are identical, so every
modality still varies by ``n_m``, but the offsets sum to zero and carry no class information. The
manifest leaves ``cue_level`` and ``cue_valid`` empty, and ``s_m`` is the offset ``n_m``.

Knobs (``merdg.config.BenchmarkConfig``)
----------------------------------------
* ``seed`` (default 0): seed of every random draw. Clip ``(domain d, class k, index j)`` draws
  from its own generators seeded by ``(seed, d, k, j, stream)``, so adding clips or classes does
  not change the existing ones.
* ``num_classes`` (5): classes ``K``, the motion directions and pitches above.
* ``clips_per_class`` (20): clips per class in each domain. The last
  ``round(test_fraction * clips_per_class)`` of each class (at least 1, at most all but 1) go to
  the test list.
* ``test_fraction`` (0.25): share of each class written to the test list.
* ``cue`` (True): plant the nuisance cue. False writes the no-cue twin.
* ``cue_validity`` (0.9): probability that a clip's cue level follows its domain's mapping.
* ``cue_hiding`` (1.5): std of each per-modality hiding offset, in units of the full cue range.
* ``signal_noise`` (0.6): scale of the class-signal jitter (angle, pitch, speed), 0 for none.
* ``num_frames`` (16), ``frame_size`` (64 pixels), ``fps`` (16): video and flow size. The audio
  lasts ``num_frames / fps`` seconds.
* ``sample_rate`` (16000 Hz): audio sample rate of the wav and of the AAC track.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange
from scipy import ndimage

from merdg.config import BenchmarkConfig
from merdg.data.clips import CacheWriteError, DatasetError

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Version of the rendering code. It is part of the cache key, so a change regenerates old caches."""

MARKER_NAME = "benchmark.json"
MANIFEST_NAME = "benchmark_manifest.csv"

FLOW_SCALE = 16.0
"""Stored pixel levels per pixel/frame of flow: pixel = clip(128 + FLOW_SCALE * flow, 0, 255)."""
FLOW_QP = 10
"""x264 constant quantizer of the flow videos, low so that flow values survive compression."""
VIDEO_QP = 20
"""x264 constant quantizer of the RGB videos."""
X264_PRESET = "veryfast"

CUE_RANGE = 2.0
"""Width of the cue level range [-1, 1], the unit of ``cue_hiding``."""
VIDEO_BRIGHTNESS_SPAN = 56.0
"""Brightness offset in 8-bit levels at ``|s_video| = span``, added to content in about [64, 192]."""
HUM_HZ = 125.0
"""Frequency of the cue hum, below the lowest class pitch."""
HUM_REF = 0.03
"""Hum amplitude (full scale 1) at ``s_audio = 0``."""
AUDIO_LOG_SPAN = math.log(8.0)
"""Natural-log hum amplitude change at ``|s_audio| = span``: from HUM_REF / 8 to HUM_REF * 8."""
FLOW_PAN_SPAN = 4.0
"""Vertical pan in pixels per frame at ``|s_flow| = span``. With object speeds up to MAX_SPEED the
stored flow stays inside [-128, 127] / FLOW_SCALE."""

PITCH_BASE_HZ = 300.0
"""Pitch of class 0 before jitter."""
TONE_PEAK = 0.3
"""Peak amplitude of the class tone (full scale 1)."""
FADE_SECONDS = 0.01
MAX_SPEED = 3.5
"""Upper bound of the object speed in pixels per frame after jitter."""

MANIFEST_FIELDS = (
    "stem",
    "domain",
    "split",
    "label",
    "class_name",
    "cue_level",
    "cue_valid",
    "s_video",
    "s_audio",
    "s_flow",
    "video_brightness",
    "hum_amplitude",
    "flow_pan",
    "angle",
    "horizontal_sign",
    "speed",
    "velocity_x",
    "velocity_y",
    "start_x",
    "start_y",
    "radius",
    "pitch_hz",
)
"""Manifest columns.

``angle`` is in radians from straight up. ``start_x`` and ``start_y`` are the object centre in
frame 0, with pixel centres at half-integers. Positions and the radius are in pixels, velocities
and ``flow_pan`` (added to flow y) in pixels per frame, and ``video_brightness`` in 8-bit levels.
"""

# Independent random streams of one clip, so that the no-cue twin keeps every other draw.
_STREAM_SIGNAL = 0
_STREAM_CUE = 1
_STREAM_RENDER = 2
_MAPPING_STREAM = 1_000_003


@dataclass(frozen=True)
class DomainStyle:
    """Recording conditions of one domain."""

    name: str
    shape: str
    """Object shape: 'disk', 'square' or 'diamond'."""
    background: str
    """Background texture: 'gradient', 'bricks' or 'scanlines'."""
    background_rgb: tuple[float, float, float]
    """Mean background colour in 8-bit levels."""
    palette: tuple[tuple[float, float, float], ...]
    """Object colours, one drawn per clip."""
    sensor_noise: float
    """Std of per-pixel Gaussian noise, in 8-bit levels."""
    harmonics: tuple[float, ...]
    """Relative amplitude of harmonics 1, 2, 3, ... of the class tone."""
    noise_exponent: float
    """Background noise power spectrum ~ f ** -exponent: 0 white, 1 pink, 2 brown."""
    noise_rms: float
    """RMS of the audio background noise (full scale 1)."""
    flow_noise: float
    """Std of the smooth flow noise, in pixels per frame."""


DOMAIN_STYLES: tuple[DomainStyle, ...] = (
    DomainStyle(
        name="studio",
        shape="disk",
        background="gradient",
        background_rgb=(128.0, 134.0, 142.0),
        palette=((188.0, 70.0, 70.0), (70.0, 90.0, 188.0), (70.0, 170.0, 80.0), (185.0, 175.0, 70.0)),
        sensor_noise=2.0,
        harmonics=(1.0, 0.25),
        noise_exponent=0.0,
        noise_rms=0.01,
        flow_noise=0.05,
    ),
    DomainStyle(
        name="street",
        shape="square",
        background="bricks",
        background_rgb=(118.0, 112.0, 100.0),
        palette=((112.0, 122.0, 80.0), (140.0, 100.0, 80.0), (90.0, 105.0, 120.0), (150.0, 140.0, 120.0)),
        sensor_noise=6.0,
        harmonics=(1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6),
        noise_exponent=1.0,
        noise_rms=0.025,
        flow_noise=0.2,
    ),
    DomainStyle(
        name="retro",
        shape="diamond",
        background="scanlines",
        background_rgb=(140.0, 120.0, 92.0),
        palette=((190.0, 150.0, 80.0), (180.0, 170.0, 140.0), (96.0, 72.0, 56.0)),
        sensor_noise=10.0,
        harmonics=(1.0, 0.0, 1 / 3, 0.0, 1 / 5, 0.0, 1 / 7),
        noise_exponent=2.0,
        noise_rms=0.03,
        flow_noise=0.4,
    ),
)
"""The three domains, in domain-index order."""

DOMAINS: tuple[str, ...] = tuple(style.name for style in DOMAIN_STYLES)


@dataclass(frozen=True)
class BenchmarkInfo:
    """A generated benchmark on disk and its label space."""

    root: Path
    domains: tuple[str, ...]
    class_names: tuple[str, ...]
    num_classes: int


@dataclass(frozen=True)
class CueGains:
    """Rendered cue per unit of ``s_m`` in each modality."""

    video: float
    """Brightness offset in 8-bit levels."""
    audio: float
    """Change of the natural-log hum amplitude."""
    flow: float
    """Vertical pan in pixels per frame."""


@dataclass(frozen=True)
class ClipPlan:
    """Everything drawn for one clip before rendering, written as one manifest row."""

    stem: str
    domain: str
    domain_index: int
    split: str
    label: int
    index: int
    class_name: str
    cue_level: float | None
    cue_valid: bool | None
    s_video: float
    s_audio: float
    s_flow: float
    video_brightness: float
    hum_amplitude: float
    flow_pan: float
    angle: float
    horizontal_sign: int
    speed: float
    velocity_x: float
    velocity_y: float
    start_x: float
    start_y: float
    radius: float
    pitch_hz: float

    def manifest_row(self) -> dict[str, str]:
        """Return the clip as manifest strings, with floats as ``repr`` so that they round-trip exactly."""
        row = {}
        for name in MANIFEST_FIELDS:
            value = getattr(self, name)
            if value is None:
                row[name] = ""
            elif isinstance(value, bool):
                row[name] = "1" if value else "0"
            else:
                row[name] = repr(value) if isinstance(value, float) else str(value)
        return row


# ---------------------------------------------------------------------------------------------
# Labels, splits and the cue plan


def class_names(num_classes: int) -> tuple[str, ...]:
    """Return the class names, named after the motion angle in degrees from straight up."""
    return tuple(f"angle{round(math.degrees(class_angle(k, num_classes))):03d}" for k in range(num_classes))


def class_angle(label: int, num_classes: int) -> float:
    """Return the motion angle of a class in radians from straight up (0 up, pi down)."""
    return math.pi * label / (num_classes - 1)


def pitch_step_octaves(num_classes: int) -> float:
    """Return the pitch step between classes: half an octave, less when the top would pass 4 octaves."""
    return min(0.5, 4.0 / (num_classes - 1))


def num_test_clips(cfg: BenchmarkConfig) -> int:
    """Return the clips per class that go to the test list."""
    return min(cfg.clips_per_class - 1, max(1, round(cfg.test_fraction * cfg.clips_per_class)))


def cue_levels(num_classes: int) -> np.ndarray:
    """Return the ``num_classes`` evenly spaced cue levels in [-1, 1]."""
    return np.linspace(-1.0, 1.0, num_classes)


def cue_mappings(cfg: BenchmarkConfig) -> np.ndarray:
    """Return the cue level of each (domain, class), shape (domains, classes).

    One seeded permutation of the levels, shifted cyclically by the domain index, so two domains
    never map a class to the same level when there are at least 3 classes.
    NOTE: with 2 classes only 2 mappings exist, and domains 0 and 2 share one.
    """
    levels = cue_levels(cfg.num_classes)
    permutation = np.random.default_rng([cfg.seed, _MAPPING_STREAM]).permutation(cfg.num_classes)
    mapping = np.empty((len(DOMAIN_STYLES), cfg.num_classes))
    for domain_index in range(len(DOMAIN_STYLES)):
        for label in range(cfg.num_classes):
            mapping[domain_index, label] = levels[permutation[(label + domain_index) % cfg.num_classes]]
    return mapping


def cue_span(cfg: BenchmarkConfig) -> float:
    """Return the bound on ``|s_m|`` that the gains are sized for: the level plus 3 offset stds."""
    return 1.0 + 3.0 * CUE_RANGE * cfg.cue_hiding


def cue_gains(cfg: BenchmarkConfig) -> CueGains:
    """Return how strongly each modality renders one unit of ``s_m``."""
    span = cue_span(cfg)
    return CueGains(video=VIDEO_BRIGHTNESS_SPAN / span, audio=AUDIO_LOG_SPAN / span, flow=FLOW_PAN_SPAN / span)


def clip_rng(cfg: BenchmarkConfig, domain_index: int, label: int, index: int, stream: int) -> np.random.Generator:
    """Return the generator of one random stream of one clip."""
    return np.random.default_rng([cfg.seed, domain_index, label, index, stream])


def draw_cue(cfg: BenchmarkConfig, mapped_level: float, rng: np.random.Generator) -> tuple[float, bool, np.ndarray]:
    """Draw a clip's cue level, whether it follows the mapping, and its 3 hiding offsets.

    The offsets are projected to sum zero and scaled so that each has std ``cue_hiding * 2``.
    Every draw happens whatever the config, so the no-cue twin gets the same offsets.
    """
    valid = bool(rng.random() < cfg.cue_validity)
    random_level = float(cue_levels(cfg.num_classes)[rng.integers(cfg.num_classes)])
    raw = rng.normal(0.0, 1.0, 3)
    # Centring 3 iid draws leaves each with variance 2/3, so scale back to unit variance.
    offsets = (raw - raw.mean()) * math.sqrt(1.5) * cfg.cue_hiding * CUE_RANGE
    level = mapped_level if valid else random_level
    return level, valid, offsets


@dataclass(frozen=True)
class Motion:
    """Straight-line motion of the object, in pixels and pixels per frame (y down)."""

    angle: float
    """Radians from straight up, before the horizontal sign is applied."""
    horizontal_sign: int
    speed: float
    velocity_x: float
    velocity_y: float
    start_x: float
    """Object centre in frame 0, with pixel centres at half-integers."""
    start_y: float


def draw_motion(cfg: BenchmarkConfig, label: int, rng: np.random.Generator) -> Motion:
    """Draw the object's motion: the class angle with jitter, a random horizontal sign, a speed.

    The path is centred on a point near the frame centre, so the object stays inside the frame.
    """
    spacing = math.pi / (cfg.num_classes - 1)
    angle = class_angle(label, cfg.num_classes) + float(rng.normal(0.0, cfg.signal_noise * spacing / 2))
    horizontal_sign = 1 if rng.random() < 0.5 else -1
    base_speed = min(3.0, 0.4 * cfg.frame_size / (cfg.num_frames - 1))
    speed = min(MAX_SPEED, base_speed * math.exp(float(rng.normal(0.0, 0.3 * cfg.signal_noise))))
    velocity_x = horizontal_sign * speed * math.sin(angle)
    velocity_y = -speed * math.cos(angle)
    jitter = 0.05 * cfg.frame_size
    mid_x = cfg.frame_size / 2 + float(rng.uniform(-jitter, jitter))
    mid_y = cfg.frame_size / 2 + float(rng.uniform(-jitter, jitter))
    half_steps = (cfg.num_frames - 1) / 2
    return Motion(
        angle=angle,
        horizontal_sign=horizontal_sign,
        speed=speed,
        velocity_x=velocity_x,
        velocity_y=velocity_y,
        start_x=mid_x - velocity_x * half_steps,
        start_y=mid_y - velocity_y * half_steps,
    )


def draw_pitch(cfg: BenchmarkConfig, label: int, rng: np.random.Generator) -> float:
    """Draw the class tone's pitch in Hz: the class pitch with Gaussian jitter in octaves."""
    step = pitch_step_octaves(cfg.num_classes)
    return PITCH_BASE_HZ * 2.0 ** (label * step + float(rng.normal(0.0, cfg.signal_noise * step / 2)))


def plan_clip(cfg: BenchmarkConfig, domain_index: int, label: int, index: int, mapping: np.ndarray) -> ClipPlan:
    """Draw the class signal and the cue of one clip."""
    domain = DOMAIN_STYLES[domain_index].name
    cue_rng = clip_rng(cfg, domain_index, label, index, _STREAM_CUE)
    level, valid, offsets = draw_cue(cfg, float(mapping[domain_index, label]), cue_rng)
    if not cfg.cue:
        level, valid = 0.0, None
    s_video, s_audio, s_flow = (float(level + offset) for offset in offsets)
    gains = cue_gains(cfg)

    signal_rng = clip_rng(cfg, domain_index, label, index, _STREAM_SIGNAL)
    motion = draw_motion(cfg, label, signal_rng)
    pitch_hz = draw_pitch(cfg, label, signal_rng)

    split = "test" if index >= cfg.clips_per_class - num_test_clips(cfg) else "train"
    return ClipPlan(
        stem=f"{domain}_c{label:02d}_{index:03d}",
        domain=domain,
        domain_index=domain_index,
        split=split,
        label=label,
        index=index,
        class_name=class_names(cfg.num_classes)[label],
        cue_level=float(level) if cfg.cue else None,
        cue_valid=valid,
        s_video=s_video,
        s_audio=s_audio,
        s_flow=s_flow,
        video_brightness=gains.video * s_video,
        hum_amplitude=HUM_REF * math.exp(gains.audio * s_audio),
        flow_pan=gains.flow * s_flow,
        radius=0.12 * cfg.frame_size,
        pitch_hz=pitch_hz,
        **asdict(motion),
    )


def plan_benchmark(cfg: BenchmarkConfig) -> list[ClipPlan]:
    """Return the plans of every clip, domain by domain, class by class."""
    mapping = cue_mappings(cfg)
    return [
        plan_clip(cfg, domain_index, label, index, mapping)
        for domain_index in range(len(DOMAIN_STYLES))
        for label in range(cfg.num_classes)
        for index in range(cfg.clips_per_class)
    ]


# ---------------------------------------------------------------------------------------------
# Rendering


def object_masks(cfg: BenchmarkConfig, style: DomainStyle, plan: ClipPlan) -> np.ndarray:
    """Return the anti-aliased object coverage of every frame, shape (T, H, W), values in [0, 1]."""
    coords = np.arange(cfg.frame_size) + 0.5
    steps = np.arange(cfg.num_frames)[:, None, None]
    dx = np.abs(coords[None, None, :] - (plan.start_x + plan.velocity_x * steps))
    dy = np.abs(coords[None, :, None] - (plan.start_y + plan.velocity_y * steps))
    if style.shape == "disk":
        distance = np.sqrt(dx**2 + dy**2)
    elif style.shape == "square":
        # Scaled so that the square has about the disk's area.
        distance = np.maximum(dx, dy) * 1.13
    else:
        distance = (dx + dy) * 0.8
    return np.clip(plan.radius + 0.5 - distance, 0.0, 1.0)


def render_background(cfg: BenchmarkConfig, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """Return the static background of one clip, shape (H, W, 3), float 8-bit levels."""
    size = cfg.frame_size
    rows = np.linspace(0.0, 1.0, size)[:, None]
    base = np.asarray(style.background_rgb)
    shade = np.ones((size, size))
    if style.background == "gradient":
        shade = shade * (1.12 - 0.24 * rows) + rng.normal(0.0, 0.03)
    elif style.background == "bricks":
        shade = brick_texture(size, rng)
    else:
        shade = scanline_texture(size)
    return shade[:, :, None] * base[None, None, :]


def brick_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Return a brick-wall shading map with random brick tones and a random phase."""
    brick_width = max(4, size // 6)
    brick_height = max(2, size // 12)
    ys, xs = np.mgrid[0:size, 0:size]
    ys = ys + int(rng.integers(brick_height))
    course = ys // brick_height
    xs = xs + int(rng.integers(brick_width)) + (course % 2) * (brick_width // 2)
    brick = xs // brick_width
    tones = 1.0 + rng.normal(0.0, 0.12, (int(course.max()) + 1, int(brick.max()) + 1))
    shade = tones[course, brick]
    mortar = (ys % brick_height == 0) | (xs % brick_width == 0)
    return np.where(mortar, 0.72, shade)


def scanline_texture(size: int) -> np.ndarray:
    """Return a vignette with a dark scanline on every second row."""
    coords = np.linspace(-1.0, 1.0, size)
    radius_squared = coords[:, None] ** 2 + coords[None, :] ** 2
    shade = 1.08 - 0.16 * radius_squared
    shade[1::2] *= 0.85
    return shade


def render_video(cfg: BenchmarkConfig, style: DomainStyle, plan: ClipPlan, masks: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Return the RGB frames, shape (T, H, W, 3) uint8, with the cue as a brightness offset."""
    background = render_background(cfg, style, rng)
    colour = np.asarray(style.palette[int(rng.integers(len(style.palette)))])
    cover = masks[..., None]
    frames = background[None] * (1.0 - cover) + colour[None, None, None, :] * cover
    frames = frames + rng.normal(0.0, style.sensor_noise, frames.shape) + plan.video_brightness
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def smooth_noise(shape: tuple[int, int, int], std: float, rng: np.random.Generator) -> np.ndarray:
    """Return spatially smooth Gaussian noise: a grid 8 times coarser, linearly upsampled."""
    frames, height, width = shape
    coarse = rng.normal(0.0, std, (frames, max(2, height // 8), max(2, width // 8)))
    zoom = (1.0, height / coarse.shape[1], width / coarse.shape[2])
    return ndimage.zoom(coarse, zoom, order=1, grid_mode=True, mode="nearest")[:, :height, :width]


def render_flow(cfg: BenchmarkConfig, style: DomainStyle, plan: ClipPlan, masks: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return flow x and flow y in pixels per frame, each (T, H, W), with the cue as a vertical pan."""
    shape = masks.shape
    flow_x = masks * plan.velocity_x + smooth_noise(shape, style.flow_noise, rng)
    flow_y = masks * plan.velocity_y + smooth_noise(shape, style.flow_noise, rng) + plan.flow_pan
    return flow_x, flow_y


def coloured_noise(num_samples: int, sample_rate: int, exponent: float, rms: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Return Gaussian noise with power spectrum ~ f ** -exponent above 300 Hz, flat below."""
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    # Flat below 300 Hz so that brown noise does not bury the hum.
    spectrum *= np.maximum(freqs, 300.0) ** (-exponent / 2)
    noise = np.fft.irfft(spectrum, num_samples)
    return noise * (rms / max(float(np.sqrt(np.mean(noise**2))), 1e-12))


def render_audio(cfg: BenchmarkConfig, style: DomainStyle, plan: ClipPlan, rng: np.random.Generator) -> np.ndarray:
    """Return the mono audio in [-1, 1]: class tone with the domain timbre, cue hum and noise."""
    num_samples = round(cfg.sample_rate * cfg.num_frames / cfg.fps)
    times = np.arange(num_samples) / cfg.sample_rate
    tone = np.zeros(num_samples)
    for number, amplitude in enumerate(style.harmonics, start=1):
        frequency = number * plan.pitch_hz
        if amplitude > 0 and frequency < 0.45 * cfg.sample_rate:
            tone += amplitude * np.sin(2 * np.pi * frequency * times + rng.uniform(0, 2 * np.pi))
    tone *= TONE_PEAK / sum(style.harmonics)
    fade = np.clip(np.minimum(times, times[-1] - times) / FADE_SECONDS, 0.0, 1.0)
    hum = plan.hum_amplitude * np.sin(2 * np.pi * HUM_HZ * times + rng.uniform(0, 2 * np.pi))
    noise = coloured_noise(num_samples, cfg.sample_rate, style.noise_exponent, style.noise_rms, rng)
    return np.clip(tone * fade + hum + noise, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Encoding


def _mux(container: av.container.OutputContainer, packets) -> None:
    for packet in packets:
        container.mux(packet)


def _add_h264_stream(container: av.container.OutputContainer, cfg: BenchmarkConfig, qp: int) -> av.VideoStream:
    # Constant QP rather than CRF: with the libx264 in PyAV 18.1, CRF encodes of the same frames
    # differed between runs in up to a third of the files, while constant-QP encodes were identical.
    # One x264 thread, because the clips are tiny and generation runs one encoder per thread.
    options = {"qp": str(qp), "preset": X264_PRESET, "threads": "1"}
    stream = container.add_stream("libx264", rate=cfg.fps, options=options)
    stream.width = cfg.frame_size
    stream.height = cfg.frame_size
    stream.pix_fmt = "yuv420p"
    return stream


def write_video_mp4(path: Path, cfg: BenchmarkConfig, frames: np.ndarray, audio: np.ndarray) -> None:
    """Write H.264 video from RGB frames with an AAC track of the audio."""
    with av.open(str(path), "w", format="mp4") as container:
        video_stream = _add_h264_stream(container, cfg, VIDEO_QP)
        audio_stream = container.add_stream("aac", rate=cfg.sample_rate, layout="mono")
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            _mux(container, video_stream.encode(frame))
        _mux(container, video_stream.encode(None))
        samples = audio.astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = cfg.sample_rate
        frame.pts = 0
        _mux(container, audio_stream.encode(frame))
        _mux(container, audio_stream.encode(None))


def write_flow_mp4(path: Path, cfg: BenchmarkConfig, flow: np.ndarray) -> None:
    """Write one flow component as full-range gray-in-luma H.264 (neutral chroma)."""
    size = cfg.frame_size
    luma = np.clip(np.rint(128.0 + FLOW_SCALE * flow), 0, 255).astype(np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = _add_h264_stream(container, cfg, FLOW_QP)
        stream.codec_context.color_range = ColorRange.JPEG
        planes = np.full((size * 3 // 2, size), 128, dtype=np.uint8)
        for index, image in enumerate(luma):
            planes[:size] = image
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.color_range = ColorRange.JPEG
            frame.pts = index
            _mux(container, stream.encode(frame))
        _mux(container, stream.encode(None))


def write_wav(path: Path, cfg: BenchmarkConfig, audio: np.ndarray) -> None:
    """Write 16-bit PCM mono audio."""
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(cfg.sample_rate)
        handle.writeframes(pcm.tobytes())


def write_clip(cfg: BenchmarkConfig, plan: ClipPlan, root: Path) -> None:
    """Render one clip and write its mp4, flow videos and wav under ``root``."""
    style = DOMAIN_STYLES[plan.domain_index]
    rng = clip_rng(cfg, plan.domain_index, plan.label, plan.index, _STREAM_RENDER)
    masks = object_masks(cfg, style, plan)
    frames = render_video(cfg, style, plan, masks, rng)
    flow_x, flow_y = render_flow(cfg, style, plan, masks, rng)
    audio = render_audio(cfg, style, plan, rng)
    folder = root / plan.domain
    write_video_mp4(folder / "videos" / f"{plan.stem}.mp4", cfg, frames, audio)
    write_flow_mp4(folder / "flow" / f"{plan.stem}_flow_x.mp4", cfg, flow_x)
    write_flow_mp4(folder / "flow" / f"{plan.stem}_flow_y.mp4", cfg, flow_y)
    write_wav(folder / "audio" / f"{plan.stem}.wav", cfg, audio)


def write_split_lists(root: Path, domain: str, plans: list[ClipPlan]) -> None:
    """Write the domain's HAC split lists: no header, "<stem>.mp4,<label>" rows, CRLF line ends."""
    for split in ("train", "test"):
        rows = [f"{plan.stem}.mp4,{plan.label}\r\n" for plan in plans if plan.split == split]
        with open(root / f"HAC_{split}_only_{domain}.csv", "w", newline="") as handle:
            handle.writelines(rows)


def write_manifest(path: Path, plans: list[ClipPlan]) -> None:
    """Write the per-clip manifest CSV (header row, ``MANIFEST_FIELDS`` columns)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        for plan in plans:
            writer.writerow(plan.manifest_row())


def read_manifest(root: Path) -> list[dict[str, str]]:
    """Return the manifest rows of a generated benchmark, as strings."""
    with open(Path(root) / MANIFEST_NAME, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# Generation and the cache


def config_hash(cfg: BenchmarkConfig) -> str:
    """Return a short hash of the config and the generator version, the cache folder key."""
    text = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_workers() -> int:
    """Return the thread count for generation: one per available CPU, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def generate_benchmark(cfg: BenchmarkConfig, root: Path, workers: int | None = None) -> list[ClipPlan]:
    """Write every clip, split list and the manifest into ``root`` (without the marker).

    Clips are written by ``workers`` threads (default: ``default_workers()``), which run in
    parallel because PyAV and numpy release the GIL while encoding and rendering. Each clip depends only on its own plan and
    generators, so the files are the same for any ``workers`` count.
    """
    plans = plan_benchmark(cfg)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    logger.info("generating benchmark: %d domains x %d classes x %d clips with %d thread(s) into %s",
                len(DOMAIN_STYLES), cfg.num_classes, cfg.clips_per_class, workers, root)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        for style in DOMAIN_STYLES:
            started = time.perf_counter()
            domain_plans = [plan for plan in plans if plan.domain == style.name]
            for folder in ("videos", "flow", "audio"):
                (root / style.name / folder).mkdir(parents=True, exist_ok=True)
            # list() waits for every clip and re-raises the first error.
            list(executor.map(lambda plan: write_clip(cfg, plan, root), domain_plans))
            write_split_lists(root, style.name, domain_plans)
            logger.info("benchmark domain %s: %d clips written in %.1f s",
                        style.name, len(domain_plans), time.perf_counter() - started)
    write_manifest(root / MANIFEST_NAME, plans)
    return plans


def marker_content(cfg: BenchmarkConfig) -> dict:
    """Return the marker JSON of a complete benchmark: config, version, label space and cue gains."""
    return {
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "domains": list(DOMAINS),
        "class_names": list(class_names(cfg.num_classes)),
        "cue_gains": asdict(cue_gains(cfg)),
        "flow_scale": FLOW_SCALE,
    }


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: Path, cfg: BenchmarkConfig) -> bool:
    """Return whether ``root`` contains a complete benchmark generated from ``cfg``."""
    marker = _read_marker(root)
    if marker is None:
        return False
    return marker.get("generator_version") == GENERATOR_VERSION and marker.get("config") == asdict(cfg)


def _check_target(root: Path, cfg: BenchmarkConfig) -> None:
    """Raise DatasetError unless ``root`` is absent, empty (then removed) or complete for ``cfg``.

    A root that became complete after the caller's check is accepted, because another process
    may have published it in between.
    """
    if not root.exists() or is_complete(root, cfg):
        return
    if not root.is_dir():
        raise DatasetError(f"benchmark root {root} exists and is not a folder: remove it or choose another root")
    if (root / MARKER_NAME).exists():
        raise DatasetError(
            f"benchmark root {root} contains a benchmark generated from a different config or generator "
            f"version (see {root / MARKER_NAME}): delete the folder or choose another root"
        )
    if any(root.iterdir()):
        raise DatasetError(f"benchmark root {root} is not empty and has no {MARKER_NAME}: "
                           "delete the folder or choose another root")
    root.rmdir()


def ensure_benchmark(cfg: BenchmarkConfig, cache_dir: Path, root: Path | None = None,
                     workers: int | None = None) -> BenchmarkInfo:
    """Generate the benchmark unless a complete one for ``cfg`` is already there, and describe it.

    ``root`` defaults to ``cache_dir / "benchmark-<config hash>"``. Generation writes into a
    temporary sibling folder and renames it onto ``root``, so a reader never sees a partial
    benchmark. When several processes generate the same root at once, the first rename wins and
    the others discard their copies. ``workers`` sets the thread count (default:
    ``default_workers()``).

    Raises:
        DatasetError: ``root`` contains anything else.
        CacheWriteError: the benchmark cannot be written into the parent folder of ``root`` (no
            permission, a read-only file system, a full disk). The partial copy is deleted.
    """
    flag = "--data.cache_dir" if root is None else "--data.root"
    root = Path(root) if root is not None else Path(cache_dir) / f"benchmark-{config_hash(cfg)}"
    info = BenchmarkInfo(root=root, domains=DOMAINS, class_names=class_names(cfg.num_classes),
                         num_classes=cfg.num_classes)
    if is_complete(root, cfg):
        logger.info("reusing the complete benchmark at %s", root)
        return info
    _check_target(root, cfg)
    if cfg.cue and cfg.num_classes < len(DOMAIN_STYLES):
        logger.warning("with %d classes, domains %s and %s share a cue mapping: use at least %d classes "
                       "for a mapping per domain", cfg.num_classes, DOMAINS[0], DOMAINS[cfg.num_classes],
                       len(DOMAIN_STYLES))

    partial = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        generate_benchmark(cfg, partial, workers)
        (partial / MARKER_NAME).write_text(json.dumps(marker_content(cfg), indent=2, sort_keys=True) + "\n")
        _publish(partial, root, cfg)
    except OSError as exc:
        # PyAV's errors of a failed write (av.error.OSError) are OSErrors too.
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise CacheWriteError(str(root.parent), f"writing the benchmark failed: {exc.strerror or exc}{where}",
                              flag=flag) from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("benchmark ready at %s (%.1f s)", root, time.perf_counter() - started)
    return info


def _publish(partial: Path, root: Path, cfg: BenchmarkConfig) -> None:
    """Rename the finished folder onto ``root``, or accept a complete copy another caller renamed first."""
    try:
        os.rename(partial, root)
    except OSError:
        if not is_complete(root, cfg):
            raise
        logger.info("another caller finished the benchmark at %s first, so this copy is discarded", root)
