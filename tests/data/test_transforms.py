"""Cached tensors to model inputs: layouts, crops, flips, the audio augmentation and seeding."""

from __future__ import annotations

import pytest
import torch

from merdg.config import AudioDecodeConfig, DataConfig, FlowDecodeConfig, VideoDecodeConfig
from merdg.data.transforms import (
    CROP_AREA_RANGE,
    CROP_ASPECT_RANGE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropBox,
    prepare_inputs,
    random_resized_crop_box,
    resized_crop,
)

FRAME = 32
CROP = 28
ROWS, FRAMES = 33, 31  # spectrogram of 1024 samples with a 64-sample window and 32 overlap
MODALITIES = ["video", "audio", "flow"]


def data_config(noise_amplitude: float = 0.05, freq_mask_rows: int = 9) -> DataConfig:
    return DataConfig(
        video=VideoDecodeConfig(num_frames=4, frame_stride=1, frame_size=FRAME, crop_size=CROP),
        flow=FlowDecodeConfig(num_frames=4, frame_stride=1, frame_size=FRAME, crop_size=CROP),
        audio=AudioDecodeConfig(num_samples=1024, nperseg=64, noverlap=32,
                                noise_amplitude=noise_amplitude, freq_mask_rows=freq_mask_rows),
    )


def coordinate_batch(batch: int = 8) -> dict[str, torch.Tensor]:
    """Frames whose values encode their pixel positions: 8 * column and 8 * row.

    Video channels are (8 * column, 8 * row, 128); flow channels are x = 8 * column, y = 8 * row.
    """
    columns = (8 * torch.arange(FRAME)).view(1, 1, 1, FRAME).expand(batch, 4, FRAME, FRAME)
    rows = (8 * torch.arange(FRAME)).view(1, 1, FRAME, 1).expand(batch, 4, FRAME, FRAME)
    video = torch.stack([columns, rows, torch.full_like(columns, 128)], dim=-1).to(torch.uint8)
    flow = torch.stack([columns, rows], dim=-1).to(torch.uint8)
    audio = torch.randn(batch, ROWS, FRAMES, generator=torch.Generator().manual_seed(0)) + 10.0
    return {"video": video, "flow": flow, "audio": audio}


def video_units(video: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: model-layout video back to 0-255 pixel values."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (video * std + mean) * 255.0


# ----------------------------------------------------------------------------------------------
# Evaluation


def test_eval_layouts_and_shapes():
    inputs = prepare_inputs(coordinate_batch(), MODALITIES, data_config(), train=False)
    assert inputs["video"].shape == (8, 3, 4, CROP, CROP)
    assert inputs["flow"].shape == (8, 2, 4, CROP, CROP)
    assert inputs["audio"].shape == (8, 1, ROWS, FRAMES)
    assert inputs["flow"].min() >= -1.0
    assert inputs["flow"].max() < 1.0


def test_eval_centre_crop_region():
    inputs = prepare_inputs(coordinate_batch(), MODALITIES, data_config(), train=False)
    first = (FRAME - CROP) // 2
    expected = 8.0 * torch.arange(first, first + CROP, dtype=torch.float32)
    video = video_units(inputs["video"])
    torch.testing.assert_close(video[:, 0], expected.expand_as(video[:, 0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(video[:, 1], expected.view(CROP, 1).expand_as(video[:, 1]), atol=1e-3, rtol=0)
    flow_x = inputs["flow"][:, 0] * 128.0 + 128.0
    assert torch.equal(flow_x, expected.expand_as(flow_x))


def test_eval_leaves_audio_unchanged():
    batch = coordinate_batch()
    inputs = prepare_inputs(batch, ["audio"], data_config(), train=False)
    assert torch.equal(inputs["audio"][:, 0], batch["audio"])


def test_only_requested_modalities_are_returned():
    inputs = prepare_inputs(coordinate_batch(), ["audio"], data_config(), train=True)
    assert set(inputs) == {"audio"}


def test_crop_larger_than_cached_frames_raises():
    batch = coordinate_batch()
    batch["video"] = batch["video"][:, :, :16, :16]
    with pytest.raises(ValueError, match="--data.video.crop_size=28"):
        prepare_inputs(batch, ["video"], data_config(), train=False)


# ----------------------------------------------------------------------------------------------
# Random resized crop


def test_crop_boxes_fit_and_follow_ranges():
    generator = torch.Generator().manual_seed(3)
    boxes = [random_resized_crop_box(256, 256, generator) for _ in range(500)]
    for box in boxes:
        assert box.top >= 0
        assert box.left >= 0
        assert box.top + box.height <= 256
        assert box.left + box.width <= 256
        # Rounding each side to whole pixels moves the area and the ratio by at most about 1%.
        assert CROP_AREA_RANGE[0] * 0.98 <= box.height * box.width / 256**2 <= CROP_AREA_RANGE[1]
        assert CROP_ASPECT_RANGE[0] * 0.98 <= box.width / box.height <= CROP_ASPECT_RANGE[1] * 1.02
    assert len({(box.top, box.left, box.height, box.width) for box in boxes}) > 400
    assert min(box.height * box.width for box in boxes) < 0.2 * 256**2
    assert max(box.height * box.width for box in boxes) > 0.8 * 256**2


def test_crop_box_falls_back_to_centre_square():
    # No box of 8% to 100% of the area with a ratio in [3/4, 4/3] fits a 1-pixel-high frame.
    assert random_resized_crop_box(1, 100, torch.Generator().manual_seed(0)) == CropBox(0, 49, 1, 1)
    assert random_resized_crop_box(100, 1, torch.Generator().manual_seed(0)) == CropBox(49, 0, 1, 1)


def test_resized_crop_known_values():
    columns = torch.arange(16, dtype=torch.float32).expand(1, 2, 16, 16)
    box = CropBox(top=2, left=4, height=8, width=8)

    same_size = resized_crop(columns, box, 8)
    upsampled = resized_crop(columns, box, 16)

    assert torch.equal(same_size, columns[..., 2:10, 4:12])
    assert upsampled.shape == (1, 2, 16, 16)
    # Bilinear, half-pixel centres: output column j samples input column 4 + (j + 0.5) / 2 - 0.5,
    # clamped to the box's edge columns 4 and 11.
    expected = torch.tensor([min(max(4 + (j + 0.5) / 2 - 0.5, 4.0), 11.0) for j in range(16)])
    torch.testing.assert_close(upsampled, expected.expand(1, 2, 16, 16), atol=1e-6, rtol=0)


def test_training_crops_video_and_flow_alike():
    inputs = prepare_inputs(coordinate_batch(), ["video", "flow"], data_config(), train=True,
                            generator=torch.Generator().manual_seed(1))
    video = video_units(inputs["video"])
    flow = inputs["flow"] * 128.0

    assert inputs["video"].shape == (8, 3, 4, CROP, CROP)
    assert inputs["flow"].shape == (8, 2, 4, CROP, CROP)
    # The y components (8 * row) went through the same box, so they match.
    torch.testing.assert_close(flow[:, 1] + 128.0, video[:, 1], atol=1e-3, rtol=0)
    centre = prepare_inputs(coordinate_batch(), ["video"], data_config(), train=False)["video"]
    assert not torch.allclose(inputs["video"], centre), "training should crop other regions than the centre"


def test_training_flip_is_shared_and_negates_flow_x():
    inputs = prepare_inputs(coordinate_batch(), ["video", "flow"], data_config(), train=True,
                            generator=torch.Generator().manual_seed(1))
    video_columns = video_units(inputs["video"])[:, 0]
    flow_x = inputs["flow"][:, 0] * 128.0
    flipped = video_columns[..., 0] > video_columns[..., -1]  # (B, T, H): columns decrease when mirrored
    assert (flipped == flipped[:, :1, :1]).all(), "a flip applies to every frame and row of a sample"

    flipped = flipped[:, 0, 0]
    assert flipped.any(), "the seeded draw should flip some samples"
    assert (~flipped).any(), "the seeded draw should keep some samples"
    for sample in range(8):
        sign = -1.0 if flipped[sample] else 1.0
        torch.testing.assert_close(flow_x[sample], sign * (video_columns[sample] - 128.0), atol=1e-3, rtol=0)


def test_training_is_seeded():
    def augmented(seed):
        return prepare_inputs(coordinate_batch(), MODALITIES, data_config(), train=True,
                              generator=torch.Generator().manual_seed(seed))

    first, again, other = augmented(5), augmented(5), augmented(6)
    for modality in MODALITIES:
        assert torch.equal(first[modality], again[modality])
        assert not torch.equal(first[modality], other[modality])


# ----------------------------------------------------------------------------------------------
# Audio augmentation


def test_audio_noise_is_bounded():
    batch = coordinate_batch()
    inputs = prepare_inputs(batch, ["audio"], data_config(freq_mask_rows=0), train=True,
                            generator=torch.Generator().manual_seed(2))
    noise = inputs["audio"][:, 0] - batch["audio"]
    assert noise.abs().max() <= 0.05 + 1e-6
    assert noise.abs().max() > 0.045
    assert abs(float(noise.mean())) < 2e-3


def test_audio_mask_zeroes_consecutive_rows():
    batch = coordinate_batch(batch=32)
    inputs = prepare_inputs(batch, ["audio"], data_config(noise_amplitude=0.0), train=True,
                            generator=torch.Generator().manual_seed(4))
    audio = inputs["audio"][:, 0]
    starts = []
    for sample in range(32):
        zero_rows = (audio[sample] == 0).all(dim=1).nonzero().flatten().tolist()
        assert len(zero_rows) == 9
        assert zero_rows == list(range(zero_rows[0], zero_rows[0] + 9))
        unmasked_rows = [row for row in range(ROWS) if row not in zero_rows]
        assert torch.equal(audio[sample, unmasked_rows], batch["audio"][sample, unmasked_rows])
        starts.append(zero_rows[0])
    # The first masked row is drawn from [0, ROWS - 1 - 9), as in the official MER-DG code.
    assert max(starts) <= ROWS - 1 - 9 - 1
    assert len(set(starts)) > 5


def test_audio_masked_rows_stay_zero_after_noise():
    batch = coordinate_batch()
    inputs = prepare_inputs(batch, ["audio"], data_config(), train=True, generator=torch.Generator().manual_seed(7))
    audio = inputs["audio"][:, 0]
    zero_rows = (audio == 0).all(dim=2)
    assert (zero_rows.sum(dim=1) == 9).all()
    unmasked = ~zero_rows.unsqueeze(-1).expand_as(audio)
    assert (audio - batch["audio"])[unmasked].abs().max() <= 0.05 + 1e-6


def test_paper_mask_range_on_paper_spectrogram():
    cfg = DataConfig(audio=AudioDecodeConfig(noise_amplitude=0.0))
    batch = {"audio": torch.ones(64, *cfg.audio.spectrogram_shape)}
    inputs = prepare_inputs(batch, ["audio"], cfg, train=True, generator=torch.Generator().manual_seed(0))
    first_rows = (inputs["audio"][:, 0] == 0).all(dim=2).float().argmax(dim=1)
    assert cfg.audio.spectrogram_shape == (257, 1004)
    assert int(first_rows.max()) <= 246  # np.random.choice(256 - 9) in the official code
