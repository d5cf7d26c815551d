"""Model selection: source validation picks by validation accuracy, the oracle by target accuracy.

Both target accuracies (train and test lists together, test list alone) come from the selected epoch.
"""

import pytest

from merdg.selection import SELECTION_METHODS, TrialHistory, select

HISTORIES = [
    TrialHistory("a", {"lambda": 0.1}, [
        {"epoch": 1, "val_acc": 70.0, "target_acc": 50.0, "target_test_acc": 45.0},
        {"epoch": 2, "val_acc": 80.0, "target_acc": 40.0, "target_test_acc": 38.0},
    ]),
    TrialHistory("b", {"lambda": 3.0}, [
        {"epoch": 1, "val_acc": 60.0, "target_acc": 65.0, "target_test_acc": 61.0},
        {"epoch": 2, "val_acc": 75.0, "target_acc": 55.0, "target_test_acc": 70.0},
    ]),
]


def test_source_validation_reports_target_at_best_validation_epoch():
    chosen = select(HISTORIES, "source_val")
    assert (chosen.trial_id, chosen.epoch) == ("a", 2)
    assert chosen.target_acc == 40.0
    assert chosen.target_test_acc == 38.0
    assert chosen.label == "source-domain validation"


def test_oracle_is_labelled_as_oracle():
    chosen = select(HISTORIES, "oracle")
    assert (chosen.trial_id, chosen.epoch, chosen.target_acc) == ("b", 1, 65.0)
    assert chosen.target_test_acc == 61.0
    assert "oracle" in chosen.label
    assert "target" in chosen.label


def test_ties_go_to_the_earlier_trial_and_epoch():
    tied = [
        TrialHistory("x", {}, [{"epoch": 1, "val_acc": 50.0, "target_acc": 1.0, "target_test_acc": 1.0},
                               {"epoch": 2, "val_acc": 50.0, "target_acc": 2.0, "target_test_acc": 2.0}]),
        TrialHistory("y", {}, [{"epoch": 1, "val_acc": 50.0, "target_acc": 3.0, "target_test_acc": 3.0}]),
    ]
    chosen = select(tied, "source_val")
    assert (chosen.trial_id, chosen.epoch) == ("x", 1)


def test_errors_for_unknown_method_and_empty_histories():
    with pytest.raises(KeyError, match="unknown selection method"):
        select(HISTORIES, "best_guess")
    with pytest.raises(ValueError, match="no trial reported"):
        select([TrialHistory("z", {}, [])], "source_val")
    assert {"source_val", "oracle"} <= set(SELECTION_METHODS)


def test_lodo_selects_on_held_out_source_accuracy():
    histories = [
        TrialHistory("a", {"lambda": 0.1}, [{"epoch": 1, "lodo_acc": 40.0}, {"epoch": 2, "lodo_acc": 45.0}]),
        TrialHistory("b", {"lambda": 3.0}, [{"epoch": 1, "lodo_acc": 50.0}, {"epoch": 2, "lodo_acc": 48.0}]),
    ]
    chosen = select(histories, "lodo")
    assert (chosen.trial_id, chosen.epoch) == ("b", 1)
    assert chosen.label == "leave-one-source-domain-out validation"


def test_seed_epoch_per_method():
    from merdg.selection import select_seed_epoch

    seed_run = TrialHistory("s", {"seed": 1}, [
        {"epoch": 1, "val_acc": 90.0, "target_acc": 10.0, "target_test_acc": 11.0},
        {"epoch": 2, "val_acc": 50.0, "target_acc": 60.0, "target_test_acc": 61.0},
        {"epoch": 3, "val_acc": 70.0, "target_acc": 30.0, "target_test_acc": 31.0},
    ])
    assert select_seed_epoch(seed_run, "lodo", selected_epoch=2).target_acc == 60.0
    # A run shorter than the selected epoch is read at its last epoch.
    assert select_seed_epoch(seed_run, "lodo", selected_epoch=9).epoch == 3
    assert select_seed_epoch(seed_run, "source_val", selected_epoch=2).epoch == 1
    assert select_seed_epoch(seed_run, "oracle", selected_epoch=2).epoch == 2
