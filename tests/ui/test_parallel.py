"""--parallel through the running studio: its API makes the video one process makes, a degree the model cannot take is
refused while the studio keeps serving, and stopping the studio leaves none of its processes behind."""

from __future__ import annotations

import time

import imageio.v3 as iio
import numpy as np
import pytest
from gradio_client.exceptions import AppError

from engine import Done, GenerationRequest
from tests.processes import descendants as children
from tests.processes import running
from tests.ui.conftest import start_app, stop_app

SIZE = dict(width=64, height=64, seed=4)


def test_a_studio_started_with_parallel_2_makes_the_video_of_one_process_and_leaves_no_process_on_exit(
    tmp_path, make_engine
):
    app = start_app(tmp_path / "outputs", "--model", "tiny-t2v-moe", "--parallel", "2")
    try:
        _, video, _, status, settings = app.client().predict(
            prompt="a heron", num_frames=9, steps=3, api_name="/text_to_video", **SIZE
        )
        assert status.startswith("Done"), status
        assert settings["parallel"]["degree"] == 2 and settings["parallel"]["kind"] == "ulysses"
        ranks = children(app.process.pid)
        assert len(ranks) >= 2  # the two ranks (and multiprocessing's resource tracker)
    finally:
        stop_app(app)
    one = make_engine("tiny-t2v-moe").submit(
        GenerationRequest(prompt="a heron", frames=9, steps=3, fps=settings["request"]["fps"], **SIZE)
    )
    end = one.wait(300)
    assert isinstance(end, Done), end
    served, alone = (iio.imread(path).astype(np.int16) for path in (video, end.path))
    # both are H.264: frames within 1/255 of each other before encoding may be coded differently, so the
    # comparison is the codec's: the same frames on average, no pixel far off
    assert served.shape == alone.shape
    assert np.abs(served - alone).mean() < 0.5 and np.abs(served - alone).max() <= 16
    deadline = time.monotonic() + 15
    while any(running(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in ranks if running(pid)]


def test_a_degree_the_model_cannot_take_is_refused_at_launch_and_the_studio_keeps_serving(tmp_path):
    app = start_app(tmp_path / "outputs", "--model", "tiny-t2v-moe", "--parallel", "3")
    try:
        with pytest.raises(AppError, match="--parallel 3 cannot split it"):
            app.client().predict(prompt="a heron", num_frames=5, steps=2, api_name="/text_to_video", **SIZE)
        assert app.client().predict(api_name="/list_loras") is not None  # still answering
        log = app.log.read_text(errors="replace")
        said = "Model tiny-t2v-moe cannot be used: --parallel 3 cannot split it: Ulysses needs the degree to divide"
        assert log.count(said) == 1, log  # at launch, in one line (and the refused job in its own line)
        assert "Traceback" not in log
        assert children(app.process.pid) == set()  # no rank was started
    finally:
        stop_app(app)
