"""A cell's figures: lambda against accuracy, target confusion matrices and per-class accuracy."""

from __future__ import annotations

import io

from merdg.tuning.plots import confusion_figure, lambda_figure, per_class_figure
from merdg.tuning.results import CellResult, SeedResult, TrialSummary, VariantResult

PNG_SIGNATURE = b"\x89PNG"


def cell(confusion: bool = True) -> CellResult:
    def seed(number: int, matrix):
        return SeedResult(number, 2, 50.0, 40.0, 30.0, matrix if confusion else None)

    return CellResult(
        protocol="multi_source", target="t", sources=["a", "b"], modalities=["video", "audio"], method="fusion",
        selection="source_val", selection_label="source-domain validation",
        mer=VariantResult({"lambda": 1.0, "estimator": "logdet"}, [seed(0, [[3, 1], [2, 4]]), seed(1, [[4, 0], [1, 5]])]),
        baseline=VariantResult({"lambda": 0.0, "estimator": "logdet"}, [seed(0, [[1, 3], [2, 4]])]),
        trials=[TrialSummary("x", {"lambda": 1.0, "estimator": "logdet"}, 2, 50.0, 40.0),
                TrialSummary("y", {"lambda": 0.1, "estimator": "koleo"}, 3, 45.0, 41.0)],
    )


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_lambda_figure_has_a_panel_per_estimator():
    figure = lambda_figure(cell())
    assert [axis.get_title() for axis in figure.axes] == ["koleo", "logdet"]
    assert png_bytes(figure).startswith(PNG_SIGNATURE)


def test_confusion_sums_seeds_and_names_classes():
    result = cell()
    assert result.mer.confusion() == [[7, 1], [3, 9]]
    figure = confusion_figure(result, ["open", "close"])
    assert [axis.get_title() for axis in figure.axes] == ["no MER (% of each true class)", "MER (% of each true class)"]
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["open", "close"]
    assert png_bytes(figure).startswith(PNG_SIGNATURE)


def test_per_class_bars_per_variant():
    figure = per_class_figure(cell(), ["open", "close"])
    bars = [patch.get_height() for patch in figure.axes[0].patches]
    # no MER: 1/4 and 4/6; MER: 7/8 and 9/12.
    assert [round(height, 1) for height in bars] == [25.0, 66.7, 87.5, 75.0]


def test_no_confusion_gives_no_figure():
    assert confusion_figure(cell(confusion=False), []) is None
    assert per_class_figure(cell(confusion=False), []) is None
