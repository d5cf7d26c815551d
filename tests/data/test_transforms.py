"""Cached tensors to model inputs: layouts, normalisation, and the mirrored flow's sign."""

import torch

from merdg.data.transforms import prepare_inputs


def cached_batch(batch=6):
    generator = torch.Generator().manual_seed(0)
    return {
        "video": torch.randint(0, 256, (batch, 4, 8, 10, 3), dtype=torch.uint8, generator=generator),
        "flow": torch.randint(0, 256, (batch, 4, 8, 10, 2), dtype=torch.uint8, generator=generator),
        "audio": torch.randn(batch, 9, 7, generator=generator),
    }


def test_eval_layouts_and_ranges():
    inputs = prepare_inputs(cached_batch(), ["video", "audio", "flow"], train=False)
    assert inputs["video"].shape == (6, 3, 4, 8, 10)
    assert inputs["flow"].shape == (6, 2, 4, 8, 10)
    assert inputs["audio"].shape == (6, 1, 9, 7)
    assert inputs["flow"].min() >= -1.0
    assert inputs["flow"].max() < 1.0


def test_flip_negates_flow_x():
    batch = cached_batch()
    plain = prepare_inputs(batch, ["video", "flow"], train=False)
    flipped = prepare_inputs(batch, ["video", "flow"], train=True, generator=torch.Generator().manual_seed(1))
    mirrored_video = [torch.equal(flipped["video"][i], plain["video"][i].flip(-1)) for i in range(6)]
    same_video = [torch.equal(flipped["video"][i], plain["video"][i]) for i in range(6)]
    assert any(mirrored_video), "the seeded draw should flip some samples"
    assert any(same_video), "the seeded draw should keep some samples"
    for i in range(6):
        if mirrored_video[i]:
            assert torch.equal(flipped["flow"][i, 0], -plain["flow"][i, 0].flip(-1))
            assert torch.equal(flipped["flow"][i, 1], plain["flow"][i, 1].flip(-1))
        else:
            assert torch.equal(flipped["flow"][i], plain["flow"][i])


def test_only_requested_modalities_are_returned():
    inputs = prepare_inputs(cached_batch(), ["audio"], train=True)
    assert set(inputs) == {"audio"}
