"""The library's checks of what a caller gives (features/validate.py and the checks built on it): messages in the
caller's own terms, and a bool never taken for a number."""

import pytest

from features import validate
from features.errors import UsageError
from features.train.config import TrainConfig, check_settings


def test_whole_numbers_are_whole_and_in_range_and_say_so():
    assert validate.whole(3, "epochs", low=1) == 3
    with pytest.raises(UsageError, match=r"^epochs 0: must be a whole number of passes, at least 1$"):
        validate.whole(0, "epochs", low=1, what=" of passes")
    with pytest.raises(UsageError, match=r"^warmup_epochs 9: give a whole number from 0 to epochs - 1 \(8\)$"):
        validate.whole(9, "warmup_epochs", low=0, high=8, high_text="{epochs} - 1 (8)")
    for value in (2.0, "2", None):
        with pytest.raises(UsageError):
            validate.whole(value, "k", low=1)


def test_a_choice_lists_the_choices_the_way_a_person_reads_them():
    assert validate.choice("b", "x", ("a", "b")) == "b"
    with pytest.raises(UsageError, match=r"choose a or b$"):
        validate.choice("c", "x", ("a", "b"))
    with pytest.raises(UsageError, match=r"choose a, b or c$"):
        validate.choice("d", "x", ("a", "b", "c"))
    with pytest.raises(UsageError, match=r"choose one of a, b, c$"):
        validate.choice("d", "x", ("a", "b", "c"), one_of=True)


@pytest.mark.parametrize("field", ["epochs", "head_epochs", "patience", "batch_size", "warmup_epochs",
                                   "train_per_class", "seed", "lr", "weight_decay", "label_smoothing"])
def test_a_bool_is_never_a_number(field):
    """TrainConfig(epochs=True) used to train for one epoch; every number the library checks refuses a bool."""
    with pytest.raises(UsageError, match=f"^{field} True: "):
        check_settings(TrainConfig(**{field: True}))


def test_the_other_checks_refuse_a_bool_too():
    from features.heads import check_epochs, check_params, check_search

    for check in (lambda: check_search(cv=True), lambda: check_search(seed=False), lambda: check_epochs(True),
                  lambda: check_params({"C": True}), lambda: check_params({"k": True}),
                  lambda: validate.batch_size(True)):
        with pytest.raises(UsageError, match="True|False"):
            check()
