"""Propagation from the dock widget says where and why it stopped each way (run under xvfb)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from napari_test_helpers import wait_idle

pytestmark = pytest.mark.gui


def ball_stack(shape: tuple[int, int, int], z: int, radius_z: float, radius_xy: float):
    """One bright ball, centred in the slices, on a dark noisy background; and its mask."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centre_y, centre_x = shape[1] // 2, shape[2] // 2
    ball = ((zz - z) / radius_z) ** 2 + ((yy - centre_y) / radius_xy) ** 2 + (
        (xx - centre_x) / radius_xy
    ) ** 2 <= 1
    volume = np.where(ball, 180.0, 45.0) + rng.normal(0, 15, shape)
    return np.clip(volume, 0, 255).astype(np.uint8), ball


@pytest.mark.slow
def test_the_message_names_each_direction_and_why_it_stopped(make_widget, qtbot, lite_predictor):
    # The ball runs from slice 2 to the stack's last slice (5); it is committed on slice 4.
    stack, ball = ball_stack((6, 96, 128), z=4, radius_z=3.0, radius_xy=30.0)
    viewer, widget = make_widget(stack, lite_predictor)
    viewer.dims.set_current_step(0, 4)
    objects = viewer.add_labels(np.zeros(stack.shape, np.uint32), name="SAM objects")
    objects.data[4][ball[4]] = 5
    objects.data[5] = 9  # another object covers all of the last slice
    objects.selected_label = 5

    assert widget.propagate()
    wait_idle(qtbot, widget, timeout=120_000)

    status = widget.status
    written = [z for z in range(6) if z != 4 and (objects.data[z] == 5).any()]
    assert written and max(written) == 3 and 2 in written, status
    assert f"Propagated object 5 to {len(written)} slices ({min(written)}-3)" in status
    # Forward it reached the stack's end, where nothing could be written.
    assert "Forward: carried to slice 5, the stack's last slice." in status
    assert "On slice 5 other objects already cover it, so nothing was written there." in status
    # Backward it stopped past the ball's end, on a test named with its value and limit.
    backward = re.search(
        r"Backward: carried to slices? ([\d-]+); stopped at slice (\d): (.*?)\.(?:\s|$)", status
    )
    assert backward is not None, status
    assert int(backward[2]) == min(written) - 1
    assert re.fullmatch(
        r"predicted IoU 0\.\d\d < 0\.\d\d|stability score 0\.\d\d < 0\.\d\d|its mask there .*|"
        r"only \d+% of .*",
        backward[3],
    ), backward[3]
