"""`r3fast plot RUN_DIR` turns a run's metrics.jsonl into PNG plots."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from r3fast.cli import main
from r3fast.train.metrics import MetricsLogger, read_metrics


def test_plot_writes_pngs_of_the_logged_metrics(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    for step in range(1, 6):
        logger.log(step, {"reward_mean": step / 10, "groups_with_signal": 0.5, "first_try_accuracy": 0.3,
                          "second_try_accuracy": 0.4 + step / 100, "kl": 0.01 * step, "tokens_per_second": 80.0,
                          "loss": -0.1})
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "reward_')  # a line torn by kill -9 is ignored
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    assert main(["plot", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"reward.png", "accuracy.png", "kl.png", "tokens_per_second.png"} <= names
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        image = plt.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something is drawn


def test_resumed_logger_drops_rows_after_the_checkpoint(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    for step in range(1, 5):
        logger.log(step, {"reward_mean": 0.0})
    logger.close()
    MetricsLogger(tmp_path, enabled=True, resume_step=2, tensorboard=False).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert not math.isnan(read_metrics(tmp_path)[0]["reward_mean"])


def test_plot_of_a_folder_without_metrics_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no training steps"):
        from r3fast.train.plot import plot_run

        plot_run(tmp_path)


def _eval_report(first: float, second: float, n: int) -> dict:
    return {"first_try_accuracy": first, "second_try_accuracy": second, "counts": {"instances": n}}


def test_held_out_plot_appears_with_the_evaluations(tmp_path, capsys):
    import json

    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    logger.log(1, {"reward_mean": 0.1})
    logger.close()
    assert main(["plot", str(tmp_path)]) == 0
    assert "held_out.png" not in capsys.readouterr().out  # no evaluation in the run: no plot of it
    (tmp_path / "eval_before.json").write_text(json.dumps(_eval_report(0.148, 0.152, 500)))
    (tmp_path / "eval_after.json").write_text(json.dumps(_eval_report(0.2, 0.21, 500)))
    assert main(["plot", str(tmp_path)]) == 0
    [path] = [p for p in capsys.readouterr().out.split() if p.endswith("held_out.png")]
    image = plt.imread(path)
    assert image.shape[0] > 100 and image[..., :3].std() > 0.01


def test_wilson_interval_holds_p_and_narrows_with_n():
    from hypothesis import given
    from hypothesis import strategies as st

    from r3fast.train.metrics import wilson_interval

    @given(st.integers(1, 10_000), st.data())
    def check(n, data):
        k = data.draw(st.integers(0, n))
        low, high = wilson_interval(k / n, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        low4, high4 = wilson_interval(k / n, 4 * n)
        assert high4 - low4 < high - low

    check()


@pytest.mark.parametrize("content", ['{"counts": {}}', "not json", '{"counts": {"instances": 0}, '
                                     '"first_try_accuracy": 0.1, "second_try_accuracy": 0.2}'])
def test_a_damaged_evaluation_report_is_a_clear_error(tmp_path, capsys, content):
    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    logger.log(1, {"reward_mean": 0.1})
    logger.close()
    (tmp_path / "eval_after.json").write_text(content)
    assert main(["plot", str(tmp_path)]) == 2
    assert "eval_after.json" in capsys.readouterr().err
