"""Typed configuration of a MER-DG job.

Every field has a default and a one-line docstring; the entry points in ``pipelines/`` turn these
dataclasses into command-line flags and YAML keys (``--train.epochs 5`` or ``train: {epochs: 5}``).
Each ``__post_init__`` validates its own fields and names the flag in its error message.

The defaults are the embedded benchmark's small CPU sizes, except in the clip classes
(``VideoDecodeConfig``, ``AudioDecodeConfig``, ``FlowDecodeConfig``): their defaults are the
MER-DG clip protocol (RGB 32 frames at stride 2 cropped to 224 pixels, flow 8 frames at stride 4
cropped to 256, audio 160000 samples with a 512-sample window and 353 overlap), while
``DataConfig`` builds them at the benchmark's sizes. A config file such as ``configs/hac.yaml``
sets the protocol's values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODALITIES = ("video", "audio", "flow")
"""Modality names, in the order used for feature concatenation."""


class ConfigError(ValueError):
    """An invalid configuration value; the message names the flag and the fix."""


def _require(condition: bool, flag: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"invalid --{flag}: {message}")


def default_cache_dir() -> Path:
    """Return the folder for the generated benchmark and the decode cache.

    ``MERDG_CACHE_DIR`` overrides the default ``~/.cache/merdg``.
    """
    return Path(os.environ.get("MERDG_CACHE_DIR", Path.home() / ".cache" / "merdg"))


@dataclass
class VideoDecodeConfig:
    """Sampling of RGB frames into the decode cache, and the crop that is the model's input.

    The defaults are the MER-DG protocol (mmaction2's SlowFast R101 8x8 recipe): 32 frames at
    stride 2, the short side resized to 256 pixels, and a 224-pixel crop, random resized at
    training time and centred at test time.
    """

    num_frames: int = 32
    """Frames per clip, taken around the centre of the clip's time span."""
    frame_stride: int = 2
    """Step between sampled frames, in source frames; spans shorter than the window are looped."""
    frame_size: int = 256
    """Side in pixels of the cached frames: the short side is resized to it, then the centre square is cropped."""
    crop_size: int = 224
    """Side in pixels of the model input: a random resized crop of the cached frame in training, its centre crop in evaluation."""

    def __post_init__(self) -> None:
        _require(self.num_frames >= 1, "data.video.num_frames", f"{self.num_frames} < 1")
        _require(self.frame_stride >= 1, "data.video.frame_stride", f"{self.frame_stride} < 1")
        _require(self.frame_size >= 8, "data.video.frame_size", f"{self.frame_size} < 8 pixels")
        _require(self.crop_size >= 8, "data.video.crop_size", f"{self.crop_size} < 8 pixels")

    @classmethod
    def for_benchmark(cls) -> VideoDecodeConfig:
        """Return the embedded benchmark's small CPU sampling: 8 frames at stride 2, 32-pixel frames, 28-pixel crops."""
        return cls(num_frames=8, frame_stride=2, frame_size=32, crop_size=28)


@dataclass
class AudioDecodeConfig:
    """Conversion of audio to a log spectrogram, and its training-time augmentation.

    Decoding runs ``scipy.signal.spectrogram``, then ``log(S + 1e-7)`` and a per-clip z-score.
    The defaults are the MER-DG protocol: the first 160000 samples at 16 kHz, a 512-sample window
    with 353 samples of overlap (257 x 1004 bins), and in training, uniform noise of +-0.05 and
    9 zeroed frequency rows.
    """

    sample_rate: int = 16000
    """Rate in Hz the audio is resampled to before the spectrogram."""
    num_samples: int = 160000
    """Samples kept from the start of the clip's span; a shorter track is tiled to this length."""
    nperseg: int = 512
    """Spectrogram window length in samples."""
    noverlap: int = 353
    """Overlap of consecutive windows in samples."""
    noise_amplitude: float = 0.05
    """Training only: half-width of the uniform noise added to each bin of the z-scored log spectrogram (0 turns it off)."""
    freq_mask_rows: int = 9
    """Training only: consecutive frequency rows set to zero at a random position in each clip (0 turns it off)."""

    def __post_init__(self) -> None:
        _require(self.sample_rate >= 1000, "data.audio.sample_rate", f"{self.sample_rate} Hz < 1000")
        _require(self.nperseg >= 16, "data.audio.nperseg", f"{self.nperseg} < 16")
        _require(
            0 <= self.noverlap < self.nperseg,
            "data.audio.noverlap",
            f"{self.noverlap} must be in [0, nperseg={self.nperseg})",
        )
        _require(
            self.num_samples >= self.nperseg,
            "data.audio.num_samples",
            f"{self.num_samples} is shorter than one window (nperseg={self.nperseg})",
        )
        _require(self.noise_amplitude >= 0, "data.audio.noise_amplitude", f"{self.noise_amplitude} < 0")
        # The mask's first row is drawn from [0, F - 1 - rows), so at least one position must remain.
        max_rows = self.spectrogram_shape[0] - 2
        _require(
            0 <= self.freq_mask_rows <= max_rows,
            "data.audio.freq_mask_rows",
            f"{self.freq_mask_rows} not in [0, {max_rows}] for {self.spectrogram_shape[0]} frequency rows "
            f"(nperseg={self.nperseg})",
        )

    @property
    def spectrogram_shape(self) -> tuple[int, int]:
        """(frequency bins, time frames) of the decoded spectrogram."""
        step = self.nperseg - self.noverlap
        return self.nperseg // 2 + 1, (self.num_samples - self.noverlap) // step

    @classmethod
    def for_benchmark(cls) -> AudioDecodeConfig:
        """Return the embedded benchmark's small CPU spectrogram (1 s, 256-sample window, 129 x 124) with the MER-DG augmentation."""
        return cls(num_samples=16000, nperseg=256, noverlap=128)


@dataclass
class FlowDecodeConfig:
    """Sampling of stored optical flow (x/y videos or u/v JPEG frames) into 2-channel clips, and the model's crop.

    The defaults are the MER-DG protocol (mmaction2's SlowOnly R50 flow recipe): 8 flow frames at
    stride 4, the short side resized to 256 pixels, and a 256-pixel crop, random resized at
    training time and centred at test time.
    """

    num_frames: int = 8
    """Flow frames per clip, taken around the centre of the clip's time span."""
    frame_stride: int = 4
    """Step between sampled flow frames, in stored flow frames."""
    frame_size: int = 256
    """Side in pixels of the cached frames: the short side is resized to it, then the centre square is cropped."""
    crop_size: int = 256
    """Side in pixels of the model input: a random resized crop of the cached frame in training, its centre crop in evaluation."""

    def __post_init__(self) -> None:
        _require(self.num_frames >= 1, "data.flow.num_frames", f"{self.num_frames} < 1")
        _require(self.frame_stride >= 1, "data.flow.frame_stride", f"{self.frame_stride} < 1")
        _require(self.frame_size >= 8, "data.flow.frame_size", f"{self.frame_size} < 8 pixels")
        _require(self.crop_size >= 8, "data.flow.crop_size", f"{self.crop_size} < 8 pixels")

    @classmethod
    def for_benchmark(cls) -> FlowDecodeConfig:
        """Return the embedded benchmark's small CPU sampling: 8 flow frames at stride 2, 32-pixel frames and crops."""
        return cls(num_frames=8, frame_stride=2, frame_size=32, crop_size=32)


@dataclass
class BenchmarkConfig:
    """Knobs of the generated benchmark (see ``merdg.data.benchmark`` for what each one plants)."""

    seed: int = 0
    """Seed of everything random in the generated media."""
    num_classes: int = 5
    """Number of action classes."""
    clips_per_class: int = 20
    """Clips per class in each domain (train and test lists together)."""
    test_fraction: float = 0.25
    """Share of each domain's clips written to its test list."""
    cue: bool = True
    """Plant the cross-modal nuisance cue; False writes the no-cue twin."""
    cue_validity: float = 0.9
    """Share of a domain's clips whose cue follows that domain's own cue-to-class mapping."""
    cue_hiding: float = 1.5
    """Standard deviation of the per-clip offsets that hide the cue in each single modality, in
    units of the full cue range. The offsets cancel when the modalities are combined."""
    signal_noise: float = 0.6
    """Strength of the per-clip jitter on the class signal (motion direction, pitch); 0 is clean."""
    num_frames: int = 16
    """Frames per generated clip."""
    frame_size: int = 64
    """Width and height of the generated video and flow, in pixels."""
    fps: int = 16
    """Frame rate of the generated video and flow."""
    sample_rate: int = 16000
    """Sample rate of the generated audio, in Hz."""

    def __post_init__(self) -> None:
        _require(2 <= self.num_classes <= 16, "data.benchmark.num_classes", f"{self.num_classes} not in [2, 16]")
        _require(self.clips_per_class >= 2, "data.benchmark.clips_per_class", f"{self.clips_per_class} < 2")
        _require(
            0.0 < self.test_fraction < 1.0, "data.benchmark.test_fraction", f"{self.test_fraction} not in (0, 1)"
        )
        _require(0.0 <= self.cue_validity <= 1.0, "data.benchmark.cue_validity", f"{self.cue_validity} not in [0, 1]")
        _require(self.cue_hiding >= 0.0, "data.benchmark.cue_hiding", f"{self.cue_hiding} < 0")
        _require(self.signal_noise >= 0.0, "data.benchmark.signal_noise", f"{self.signal_noise} < 0")
        _require(self.num_frames >= 2, "data.benchmark.num_frames", f"{self.num_frames} < 2")
        _require(
            self.frame_size >= 16 and self.frame_size % 2 == 0,
            "data.benchmark.frame_size",
            f"{self.frame_size} must be even and at least 16 (H.264 with 4:2:0 chroma)",
        )
        _require(self.fps >= 1, "data.benchmark.fps", f"{self.fps} < 1")
        _require(
            self.sample_rate >= 16000,
            "data.benchmark.sample_rate",
            f"{self.sample_rate} Hz < 16000 (the highest class pitches reach about 5.5 kHz)",
        )


@dataclass
class DataConfig:
    """Dataset, decoded modalities, decode settings and cache location."""

    dataset: str = "benchmark"
    """Dataset reader: 'benchmark' (generated on first use), 'hac' or 'epic' (a tree at --data.root),
    or 'manifest' (a clip table at --data.manifest)."""
    root: Path | None = None
    """Dataset root. For 'benchmark', where to generate it (default: a folder under the cache dir)."""
    splits_dir: Path | None = None
    """Folder with the split files (HAC_{train,test}_only_<domain>.csv for 'hac', D{1,2,3}_{train,test}.pkl
    for 'epic'); default: the dataset root."""
    epic_layout: str = "frames"
    """Media layout of an 'epic' tree: 'frames' (JPEG frame folders and a wav per video) or 'segments'
    (an mp4 per action segment)."""
    manifest: Path | None = None
    """Clip table (.csv or .parquet) for --data.dataset manifest; relative media paths in it are
    resolved against its folder."""
    class_names: list[str] | None = None
    """Class names of a 'manifest' dataset, indexed by label; default: the labels as text."""
    domains: list[str] | None = None
    """Domains to use; default: all of the dataset's domains."""
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    """Modalities to decode and train on: any non-empty subset of video, audio, flow."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Folder for the generated benchmark and the Parquet decode cache."""
    skip_bad_clips: bool = False
    """Skip clips that cannot be decoded (counted, listed in a quarantine CSV) instead of failing."""
    decode_batch_size: int = 8
    """Clips per Ray Data decode task batch."""
    video: VideoDecodeConfig = field(default_factory=VideoDecodeConfig.for_benchmark)
    """RGB clip sampling and crop. The default is the embedded benchmark's small CPU size, and the class defaults are the MER-DG protocol."""
    audio: AudioDecodeConfig = field(default_factory=AudioDecodeConfig.for_benchmark)
    """Audio spectrogram and its augmentation. The default is the embedded benchmark's small CPU size, and the class defaults are the MER-DG protocol."""
    flow: FlowDecodeConfig = field(default_factory=FlowDecodeConfig.for_benchmark)
    """Optical flow sampling and crop. The default is the embedded benchmark's small CPU size, and the class defaults are the MER-DG protocol."""
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)

    def __post_init__(self) -> None:
        _require(len(self.modalities) > 0, "data.modalities", "empty; choose any of video, audio, flow")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        _require(not unknown, "data.modalities", f"unknown modality {unknown}; choose from {list(MODALITIES)}")
        _require(len(set(self.modalities)) == len(self.modalities), "data.modalities",
                 f"{self.modalities} lists a modality twice")
        # Canonical order, so that the same set always gives the same model and cache key.
        self.modalities = [m for m in MODALITIES if m in self.modalities]
        _require(self.decode_batch_size >= 1, "data.decode_batch_size", f"{self.decode_batch_size} < 1")
        for modality in ("video", "flow"):
            clip = getattr(self, modality)
            _require(modality not in self.modalities or clip.crop_size <= clip.frame_size, f"data.{modality}.crop_size",
                     f"{clip.crop_size} pixels is larger than the cached frames (--data.{modality}.frame_size="
                     f"{clip.frame_size}). Lower the crop size or raise the frame size")
        if self.domains is not None:
            _require(len(self.domains) >= 2, "data.domains",
                     f"{self.domains}: leave-one-domain-out needs at least 2 domains")
            _require(len(set(self.domains)) == len(self.domains), "data.domains", f"{self.domains} lists a domain twice")
        self.root = Path(self.root) if self.root is not None else None
        self.splits_dir = Path(self.splits_dir) if self.splits_dir is not None else None
        self.manifest = Path(self.manifest) if self.manifest is not None else None
        _require(self.epic_layout in ("frames", "segments"), "data.epic_layout",
                 f"unknown layout {self.epic_layout!r}; choose from ['frames', 'segments']")
        if self.class_names is not None:
            _require(len(self.class_names) >= 2, "data.class_names", f"{self.class_names}: at least 2 classes")
        self.cache_dir = Path(self.cache_dir)


@dataclass
class ModelConfig:
    """The per-modality encoders (small CPU ones or the paper's pretrained backbones), the MER projectors and the fusion head."""

    embed_dim: int = 128
    """Output width of each small CPU encoder; the paper backbones have fixed widths (video 2304, flow 2048, audio 512)."""
    width: int = 16
    """Channels of the first convolution of each small CPU encoder (doubled at each stage)."""
    projector_hidden: int = 256
    """Hidden width of the MER projector (the official code uses 2048)."""
    projection_dim: int = 128
    """Width of the projection that the entropy estimator regularizes (the official code uses 128)."""
    fusion_hidden: int = 512
    """Hidden width of the fusion head Linear(in, hidden)-ReLU-Dropout-Linear(hidden, classes)."""
    dropout: float = 0.5
    """Dropout of the fusion head."""
    encoders: dict[str, str] = field(
        default_factory=lambda: {"video": "video_cnn", "audio": "audio_cnn", "flow": "flow_cnn"}
    )
    """Encoder of each modality by registered name: video_cnn, audio_cnn, flow_cnn (small CPU encoders) or slowfast_r101, resnet18_audio, slowonly_r50_flow (paper backbones). An unlisted modality uses its small CPU encoder."""
    checkpoints: dict[str, Path] = field(default_factory=dict)
    """Weights file of each modality's paper backbone: slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth, H.pth.tar, slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth."""
    strict_load: bool = True
    """Require each checkpoint to contain exactly the backbone's tensors besides its classifier head. False loads the tensors that fit and logs those left at random initialisation."""
    freeze_bn_stats: bool = True
    """Keep the BatchNorm running statistics of frozen backbone stages fixed in training; false updates them, as the MER-DG code does."""
    trainable_from: str = "layer4"
    """First backbone stage that trains (stem, layer1, layer2, layer3, layer4, or head to freeze the whole backbone); earlier stages are frozen. Small CPU encoders have no stages: head freezes them entirely (at their random initialisation), and every other value trains them entirely."""

    def __post_init__(self) -> None:
        for name in ("embed_dim", "width", "projector_hidden", "projection_dim", "fusion_hidden"):
            value = getattr(self, name)
            _require(value >= 1, f"model.{name}", f"{value} < 1")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"{self.dropout} not in [0, 1)")
        for flag, mapping in (("model.encoders", self.encoders), ("model.checkpoints", self.checkpoints)):
            unknown = [m for m in mapping if m not in MODALITIES]
            _require(not unknown, flag, f"unknown modality {unknown}; choose from {list(MODALITIES)}")
        empty = [m for m, name in self.encoders.items() if not name]
        _require(not empty, "model.encoders", f"no encoder name for {empty}")
        self.checkpoints = {m: Path(path) for m, path in self.checkpoints.items()}
        # The same stages as merdg.models.backbones.TRAINABLE_FROM_CHOICES; a test keeps them equal.
        stages = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
        _require(self.trainable_from in stages, "model.trainable_from",
                 f"unknown stage {self.trainable_from!r}; choose from {list(stages)}")


NORMALIZATIONS = ("none", "l2", "standardize")
"""Per-feature normalisations MER can apply before its estimator."""

MER_SCOPES = ("local", "global")
"""Batches a MER estimate is computed over under DDP: each worker's, or all workers' together."""


@dataclass
class MERConfig:
    """The MER term of one training run; a search overrides the sampled fields per trial."""

    weight: float = 3.0
    """lambda, the weight of the summed per-modality entropy losses; 0 trains the host method alone."""
    estimator: str = "logdet"
    """Entropy estimator (a name in merdg.entropy.ESTIMATORS)."""
    estimator_params: dict[str, float] = field(default_factory=dict)
    """Keyword parameters of the estimator; empty uses its defaults."""
    normalize: str = "none"
    """Feature normalisation before the estimator: none, l2 (unit rows) or standardize (per dimension)."""
    modality_weights: dict[str, float] = field(default_factory=dict)
    """Weight w_m of each modality's term; a modality not listed weighs 1."""
    scope: str = "local"
    """Under DDP, estimate on each worker's batch (local) or on the gathered global batch (global)."""

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "mer.weight", f"{self.weight} < 0")
        _require(self.normalize in NORMALIZATIONS, "mer.normalize",
                 f"unknown normalisation {self.normalize!r}; choose from {list(NORMALIZATIONS)}")
        _require(self.scope in MER_SCOPES, "mer.scope", f"unknown scope {self.scope!r}; choose from {list(MER_SCOPES)}")
        unknown = [m for m in self.modality_weights if m not in MODALITIES]
        _require(not unknown, "mer.modality_weights", f"unknown modality {unknown}; choose from {list(MODALITIES)}")
        negative = {m: w for m, w in self.modality_weights.items() if w < 0}
        _require(not negative, "mer.modality_weights", f"negative weights {negative}")

    @property
    def enabled(self) -> bool:
        """Whether the MER term is added to the loss."""
        return self.weight > 0


OPTIMIZERS = ("adam", "lars")
"""Optimizers of ``--train.optimizer``."""

TEACHER_AVERAGES = ("simple", "exponential")
"""Weight averages CMRF's teacher can keep of the student."""


def _require_weight(value: float, flag: str) -> None:
    _require(value >= 0, flag, f"{value} < 0; a loss weight must be >= 0 (0 turns the term off)")


@dataclass
class SimMMDGConfig:
    """SimMMDG's loss weights and sizes (Dong et al., NeurIPS 2023); defaults from its official code."""

    contrast_weight: float = 3.0
    """Weight of the supervised contrastive loss on the shared halves across modalities."""
    temperature: float = 0.1
    """Temperature of that contrastive loss."""
    distance_weight: float = 0.7
    """Weight of the distance term that pushes each specific half away from its shared half."""
    translation_weight: float = 0.1
    """Weight of the cross-modal translation loss."""
    translation_hidden: int = 256
    """Hidden width of each translation MLP (the official code uses 2048)."""

    def __post_init__(self) -> None:
        for name in ("contrast_weight", "distance_weight", "translation_weight"):
            _require_weight(getattr(self, name), f"methods.simmmdg.{name}")
        _require(self.temperature > 0, "methods.simmmdg.temperature", f"{self.temperature} <= 0")
        _require(self.translation_hidden >= 1, "methods.simmmdg.translation_hidden", f"{self.translation_hidden} < 1")


@dataclass
class CMCConfig:
    """CMC's cross-modal InfoNCE (Tian et al., "Contrastive Multiview Coding", ECCV 2020)."""

    contrast_weight: float = 1.0
    """Weight of the summed InfoNCE terms; CMC's own objective adds them with weight 1."""
    temperature: float = 0.07
    """InfoNCE temperature (the CMC code's default)."""

    def __post_init__(self) -> None:
        _require_weight(self.contrast_weight, "methods.cmc.contrast_weight")
        _require(self.temperature > 0, "methods.cmc.temperature", f"{self.temperature} <= 0")


@dataclass
class CMRFConfig:
    """CMRF's teacher, mixup and loss weights (Fan et al., "Cross-modal Representation Flattening
    for Multi-modal Domain Generalization", NeurIPS 2024).

    The defaults are those of the CMRF training script of the MMDG benchmark code
    (lihongzhao99/MMDG_Benchmark): distillation weight 3, unimodal weight 2, Beta(0.1, 0.1)
    mixup, a simple moving-average teacher from step 400, and half weight for audio.
    """

    distill_weight: float = 3.0
    """Weight of the distillation of the teacher's mixed projections into the student's."""
    unimodal_weight: float = 2.0
    """Weight of the per-modality classifiers' cross-entropy."""
    contrast_weight: float = 3.0
    """Weight of the supervised contrastive loss on the student's projections across modalities."""
    temperature: float = 0.1
    """Temperature of that contrastive loss."""
    mixup_alpha: float = 0.1
    """Both parameters of the Beta distribution that draws each mixing coefficient."""
    teacher_average: str = "simple"
    """Weight average the teacher keeps of the student after start_step: simple (each step weighs the same) or exponential."""
    ema_momentum: float = 0.999
    """Momentum m of the exponential average, teacher = m * teacher + (1 - m) * student."""
    start_step: int = 400
    """Optimizer steps during which the teacher copies the student and distillation is off."""
    modality_weights: dict[str, float] = field(default_factory=lambda: {"audio": 0.5})
    """Weight of each modality's unimodal and distillation terms; an unlisted modality weighs 1."""

    def __post_init__(self) -> None:
        for name in ("distill_weight", "unimodal_weight", "contrast_weight"):
            _require_weight(getattr(self, name), f"methods.cmrf.{name}")
        _require(self.temperature > 0, "methods.cmrf.temperature", f"{self.temperature} <= 0")
        _require(self.mixup_alpha > 0, "methods.cmrf.mixup_alpha", f"{self.mixup_alpha} <= 0")
        _require(self.teacher_average in TEACHER_AVERAGES, "methods.cmrf.teacher_average",
                 f"unknown average {self.teacher_average!r}; choose from {list(TEACHER_AVERAGES)}")
        _require(0.0 <= self.ema_momentum < 1.0, "methods.cmrf.ema_momentum", f"{self.ema_momentum} not in [0, 1)")
        _require(self.start_step >= 0, "methods.cmrf.start_step", f"{self.start_step} < 0")
        unknown = [m for m in self.modality_weights if m not in MODALITIES]
        _require(not unknown, "methods.cmrf.modality_weights", f"unknown modality {unknown}; choose from {list(MODALITIES)}")
        negative = {m: w for m, w in self.modality_weights.items() if w < 0}
        _require(not negative, "methods.cmrf.modality_weights", f"negative weights {negative}")


@dataclass
class MethodsConfig:
    """Settings of each host method; ``--train.method`` chooses the one that trains."""

    simmmdg: SimMMDGConfig = field(default_factory=SimMMDGConfig)
    """SimMMDG settings."""
    cmc: CMCConfig = field(default_factory=CMCConfig)
    """CMC settings."""
    cmrf: CMRFConfig = field(default_factory=CMRFConfig)
    """CMRF settings."""


@dataclass
class TrainConfig:
    """Optimisation and the Ray Train worker group of one trial."""

    method: str = "fusion"
    """Host method whose loss MER is added to: fusion, simmmdg, cmc or cmrf (settings in --methods.<method>.*)."""
    epochs: int = 10
    """Training epochs per trial (the upper bound of early stopping)."""
    batch_size: int = 16
    """Global batch size, split evenly over the workers."""
    balanced_batches: bool = True
    """Fill every worker's training batch with equal numbers of clips from each source domain, as the
    official MER-DG code does. False streams the shuffled training rows of all source domains together."""
    optimizer: str = "adam"
    """Optimizer: adam, or lars (LARS of You et al., 2017, the official MER-DG plain-fusion script's choice)."""
    lr: float = 1e-3
    """Learning rate of the optimizer."""
    encoder_lr_scale: float = 1.0
    """Multiplier of the modality encoders' learning rate. The fusion head, the MER projectors and the host
    method's modules keep --train.lr. To freeze the encoders instead, use --model.trainable_from head."""
    weight_decay: float = 1e-4
    """Weight decay: Adam's L2 penalty, or LARS's (the official MER-DG code uses 1e-4 with Adam, 1e-6 with LARS)."""
    lars_momentum: float = 0.9
    """LARS momentum, in [0, 1) (the official MER-DG code's value)."""
    lars_eta: float = 0.001
    """LARS trust coefficient: a layer's step is lr * eta * ||w|| / (||g|| + weight_decay * ||w||) times
    (g + weight_decay * w) (the official MER-DG code's value)."""
    lars_exclude_bias_and_norm: bool = True
    """Give 1-d parameters (biases, normalisation scales and shifts) plain momentum steps under LARS,
    without weight decay or trust ratio."""
    num_workers: int = 2
    """Ray Train workers (DDP processes) per trial."""
    use_gpu: bool = False
    """Give each worker one GPU and use NCCL; otherwise CPU workers with gloo."""
    cpus_per_worker: float | None = None
    """CPUs reserved per worker; default: sized from the cluster so that Ray Data keeps one CPU."""
    max_failures: int = 2
    """Restarts of a trial's training workers after a worker process dies or raises. Each restart resumes from
    the checkpoint of the last finished epoch; 0 fails the trial at the first error, -1 restarts without limit."""
    seed: int = 0
    """Seed of model initialisation and batch order."""
    diagnostics: bool = True
    """After the last epoch, measure the trained model on held-out data and report the diag_* metrics
    (effective rank, cross-domain alignment, domain and unimodal probes, missing-modality and noise robustness)."""
    diagnostics_noise_std: float = 0.5
    """Standard deviation of the Gaussian noise added to every model input for diag_target_acc_noise, in the
    units of the normalised inputs (ImageNet-standardised video, (x - 128) / 128 flow, z-scored log spectrograms)."""

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", f"{self.epochs} < 1")
        _require(self.num_workers >= 1, "train.num_workers", f"{self.num_workers} < 1")
        _require(
            self.batch_size >= self.num_workers,
            "train.batch_size",
            f"{self.batch_size} is smaller than --train.num_workers={self.num_workers}",
        )
        _require(self.lr > 0, "train.lr", f"{self.lr} <= 0")
        _require(self.encoder_lr_scale > 0, "train.encoder_lr_scale",
                 f"{self.encoder_lr_scale} <= 0; to freeze the encoders, set --model.trainable_from head")
        _require(self.diagnostics_noise_std >= 0, "train.diagnostics_noise_std", f"{self.diagnostics_noise_std} < 0")
        _require(self.weight_decay >= 0, "train.weight_decay", f"{self.weight_decay} < 0")
        _require(self.optimizer in OPTIMIZERS, "train.optimizer",
                 f"unknown optimizer {self.optimizer!r}; choose from {list(OPTIMIZERS)}")
        _require(0.0 <= self.lars_momentum < 1.0, "train.lars_momentum", f"{self.lars_momentum} not in [0, 1)")
        _require(self.lars_eta > 0, "train.lars_eta", f"{self.lars_eta} <= 0")
        if self.cpus_per_worker is not None:
            _require(self.cpus_per_worker > 0, "train.cpus_per_worker", f"{self.cpus_per_worker} <= 0")
        _require(self.max_failures >= -1, "train.max_failures",
                 f"{self.max_failures} < -1; give 0 for no restarts or -1 for unlimited restarts")


PROTOCOLS = ("multi_source", "single_source")
"""Domain generalization protocols: train on every domain but the target, or on one domain alone."""

SELECTIONS = ("source_val", "lodo", "oracle")
"""Model selection methods of ``--tune.selection`` (registered in ``merdg.selection``)."""


@dataclass
class TuneConfig:
    """The scope of a sweep (protocols, targets, modality sets, host methods, seeds) and its search of MER's settings."""

    space: Path = Path("tune_spaces/default.yaml")
    """Search space YAML (lambda, estimator and the estimator's own parameters)."""
    num_trials: int = 4
    """Optuna trials per target domain, modality set and host method."""
    protocols: list[str] = field(default_factory=lambda: ["multi_source"])
    """Protocols to run: multi_source (leave one domain out, train on all the others) and/or
    single_source (train on one domain, test on each other domain in turn)."""
    targets: list[str] | None = None
    """Target domains to run; default: every domain in turn."""
    modality_sets: list[list[str]] | None = None
    """Modality sets to run, each a subset of --data.modalities (for example [[video,audio],[video,audio,flow]]);
    default: --data.modalities alone."""
    methods: list[str] | None = None
    """Host methods to run (fusion, simmmdg, cmc, cmrf); default: --train.method alone."""
    baseline: bool = True
    """Also train each host method without MER (lambda 0) on the same seeds, for paired differences."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds the selected configuration (and the baseline) is retrained with; results report their mean and std."""
    grace_period: int = 3
    """Epochs every trial runs before ASHA may stop it."""
    reduction_factor: int = 2
    """ASHA keeps the top 1/reduction_factor of trials at each rung."""
    max_concurrent_trials: int = 1
    """Trials run at the same time."""
    selection: str = "source_val"
    """Model selection: 'source_val' (held-out source-domain data), 'lodo' (leave one source domain out among
    the sources; multi-source only) or 'oracle' (target data, labeled so)."""
    seed: int = 0
    """Seed of the Optuna sampler."""
    resume: bool = True
    """Continue an interrupted sweep with the same resolved config: finished work is read back, not rerun.
    False starts a new sweep."""

    def __post_init__(self) -> None:
        self.space = Path(self.space)
        _require(self.num_trials >= 1, "tune.num_trials", f"{self.num_trials} < 1")
        _require(self.grace_period >= 1, "tune.grace_period", f"{self.grace_period} < 1")
        _require(self.reduction_factor >= 2, "tune.reduction_factor", f"{self.reduction_factor} < 2")
        _require(self.max_concurrent_trials >= 1, "tune.max_concurrent_trials", f"{self.max_concurrent_trials} < 1")
        _require(len(self.protocols) > 0, "tune.protocols", f"empty; choose from {list(PROTOCOLS)}")
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        _require(not unknown, "tune.protocols", f"unknown protocol {unknown}; choose from {list(PROTOCOLS)}")
        _require(len(set(self.protocols)) == len(self.protocols), "tune.protocols", f"{self.protocols} lists one twice")
        _require(self.selection in SELECTIONS, "tune.selection",
                 f"unknown selection method {self.selection!r}; choose from {list(SELECTIONS)}")
        _require(len(self.seeds) > 0, "tune.seeds", "empty; give at least one seed, for example [0,1,2]")
        _require(len(set(self.seeds)) == len(self.seeds), "tune.seeds", f"{self.seeds} lists a seed twice")
        if self.methods is not None:
            _require(len(self.methods) > 0, "tune.methods", "empty; omit it to run --train.method alone")
            _require(len(set(self.methods)) == len(self.methods), "tune.methods", f"{self.methods} lists a method twice")
        if self.modality_sets is not None:
            _require(len(self.modality_sets) > 0, "tune.modality_sets", "empty; omit it to run --data.modalities alone")
            canonical = []
            for chosen in self.modality_sets:
                unknown = [m for m in chosen if m not in MODALITIES]
                _require(len(chosen) > 0 and not unknown and len(set(chosen)) == len(chosen), "tune.modality_sets",
                         f"{chosen} is not a non-empty set of {list(MODALITIES)}")
                canonical.append([m for m in MODALITIES if m in chosen])
            _require(len({tuple(c) for c in canonical}) == len(canonical), "tune.modality_sets",
                     f"{self.modality_sets} lists a set twice")
            self.modality_sets = canonical
        if self.selection == "lodo":
            _require(self.protocols == ["multi_source"], "tune.selection",
                     "lodo needs two or more source domains, so it runs with --tune.protocols [multi_source] only")


@dataclass
class TrackingConfig:
    """MLflow destination of metrics, parameters and result tables."""

    tracking_uri: str | None = None
    """MLflow tracking URI, for example http://127.0.0.1:5000; default: a SQLite store in --output_dir."""
    experiment: str = "merdg"
    """MLflow experiment name."""


@dataclass
class JobConfig:
    """A whole MER-DG job: data, model, training, tuning and tracking."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    mer: MERConfig = field(default_factory=MERConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: Path = Path("merdg_runs")
    """Folder for Ray Tune results, checkpoints and the default MLflow store."""
    ray_address: str | None = None
    """Address of a running Ray cluster ('auto' inside one); default: start a local Ray instance."""

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        for chosen in self.tune.modality_sets or []:
            missing = [m for m in chosen if m not in self.data.modalities]
            _require(not missing, "tune.modality_sets",
                     f"{chosen} uses {missing}, which --data.modalities {self.data.modalities} does not decode; "
                     "add them to --data.modalities")

    @property
    def modality_sets(self) -> list[list[str]]:
        """The modality sets a sweep runs: ``--tune.modality_sets``, or ``--data.modalities`` alone."""
        return [list(s) for s in self.tune.modality_sets] if self.tune.modality_sets else [list(self.data.modalities)]

    @property
    def host_methods(self) -> list[str]:
        """The host methods a sweep runs: ``--tune.methods``, or ``--train.method`` alone."""
        return list(self.tune.methods) if self.tune.methods else [self.train.method]

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved configuration as plain YAML/JSON-serialisable data."""
        return _plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Return a short hash of the resolved configuration: the identity of a sweep and its runs.

        ``--tune.resume`` is left out, so that turning it off and on does not change the identity.
        """
        values = self.to_dict()
        values["tune"].pop("resume", None)
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
