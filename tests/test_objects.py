"""Committing objects without losing the user's work."""

import numpy as np
import pytest

from sam_viz.objects import ObjectLabels, commit_pixels, next_label


def _mask(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_commit_gives_new_ids_and_never_overwrites_by_default():
    objects = ObjectLabels((20, 30))
    a = objects.commit(_mask((20, 30), slice(0, 10), slice(0, 10)))
    b = objects.commit(_mask((20, 30), slice(5, 15), slice(5, 15)))
    assert (a, b) == (1, 2)
    assert (objects.labels[0:10, 0:10] == 1).all()  # the overlap stayed object 1
    assert (objects.labels[10:15, 5:15] == 2).all()
    assert objects.object_count == 2


def test_overwrite_when_asked_and_undo_restores_exactly():
    objects = ObjectLabels((20, 30))
    objects.commit(_mask((20, 30), slice(0, 10), slice(0, 10)))
    before = objects.labels.copy()
    objects.commit(_mask((20, 30), slice(5, 15), slice(5, 15)), overwrite=True)
    assert (objects.labels[5:10, 5:10] == 2).all()
    assert objects.undo()
    np.testing.assert_array_equal(objects.labels, before)
    assert objects.redo()
    assert (objects.labels[5:10, 5:10] == 2).all()
    assert objects.undo() and objects.undo() and not objects.undo()
    assert not objects.labels.any()


def test_commit_with_chosen_id_extends_that_object():
    objects = ObjectLabels(np.zeros((10, 10), np.uint16))
    objects.commit(_mask((10, 10), slice(0, 3), slice(0, 3)), label=7)
    objects.commit(_mask((10, 10), slice(2, 5), slice(2, 5)), label=7)
    assert objects.object_count == 1 and (objects.labels == 7).sum() == 9 + 9 - 1
    assert next_label(objects.labels) == 8


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"label": 0}, ">= 1"), ({"label": 70000}, "does not fit")],
)
def test_bad_labels(kwargs, words):
    labels = np.zeros((4, 4), np.uint16)
    with pytest.raises(ValueError, match=words):
        commit_pixels(labels, np.ones((4, 4), bool), **kwargs)


def test_empty_or_fully_covered_commit_is_refused():
    objects = ObjectLabels((4, 4))
    with pytest.raises(ValueError, match="Nothing to commit"):
        objects.commit(np.zeros((4, 4), bool))
    objects.commit(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="overwrite"):
        objects.commit(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="does not match"):
        objects.commit(np.ones((5, 4), bool))
