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


def _eval_report(first: float, second: float, n: int, control: float | None = None) -> dict:
    report = {"first_try_accuracy": first, "second_try_accuracy": second, "counts": {"instances": n}}
    if control is not None:  # reports from before the no-reflection control lack these keys
        report.update(second_try_without_reflection_accuracy=control, reflection_lift=second - control,
                      reflection_lift_ci95=[second - control - 0.01, second - control + 0.02])
    return report


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
    # with the control in both reports, the plot gets its bars too
    from r3fast.train.plot import read_eval_report

    (tmp_path / "eval_before.json").write_text(json.dumps(_eval_report(0.148, 0.152, 500, control=0.15)))
    (tmp_path / "eval_after.json").write_text(json.dumps(_eval_report(0.2, 0.21, 500, control=0.22)))
    n, values, lift = read_eval_report(tmp_path / "eval_after.json")
    assert n == 500 and values["second_try_without_reflection_accuracy"] == 0.22
    assert lift == pytest.approx((-0.01, -0.02, 0.01))
    assert main(["plot", str(tmp_path)]) == 0
    assert plt.imread(path)[..., :3].std() > 0.01


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


def test_paired_interval_matches_a_hand_computation():
    from r3fast.train.metrics import paired_difference_interval

    # 20 items: 5 pass both ways, 3 only the first, 1 only the second, 11 neither: p1 = 0.4, p2 = 0.3.
    # By hand (z = 1.96): Wilson(0.4, 20) = [0.218804, 0.613422], Wilson(0.3, 20) = [0.145476, 0.518976],
    # phi = (5*11 - 3*1) / sqrt(8*12*6*14) = 0.579066,
    # delta = sqrt(0.181196^2 - 2 phi 0.181196 * 0.218976 + 0.218976^2) = 0.186630,
    # epsilon = sqrt(0.213422^2 - 2 phi 0.213422 * 0.154524 + 0.154524^2) = 0.176728.
    low, high = paired_difference_interval(5, 3, 1, 11)
    assert low == pytest.approx(0.1 - 0.186630, abs=2e-6) and high == pytest.approx(0.1 + 0.176728, abs=2e-6)
    # Newcombe's interval at the edge: every item rescued by the first only is a difference of 1, bounded by 1
    low, high = paired_difference_interval(0, 10, 0, 0)
    assert 0.5 < low < 1.0 and high == 1.0
    with pytest.raises(ValueError, match="paired counts must be >= 0"):
        paired_difference_interval(1, -1, 0, 0)


def test_paired_interval_holds_the_difference_and_is_narrower_than_unpaired():
    from hypothesis import given
    from hypothesis import strategies as st

    from r3fast.train.metrics import paired_difference_interval, wilson_interval

    @given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 300))
    def check(both, first_only, second_only, neither):
        n = both + first_only + second_only + neither
        if n == 0:
            return
        low, high = paired_difference_interval(both, first_only, second_only, neither)
        diff = (first_only - second_only) / n
        assert -1.0 <= low <= diff <= high <= 1.0
        # swapping the two conditions mirrors the interval
        mirrored = paired_difference_interval(both, second_only, first_only, neither)
        assert mirrored == pytest.approx((-high, -low), abs=1e-12)
        # positively correlated pairs (phi >= 0): no wider than Newcombe's interval for independent samples
        if both * neither >= first_only * second_only:
            l1, u1 = wilson_interval((both + first_only) / n, n)
            l2, u2 = wilson_interval((both + second_only) / n, n)
            p1, p2 = (both + first_only) / n, (both + second_only) / n
            unpaired = (p1 - p2 - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5, p1 - p2 + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5)
            assert low >= unpaired[0] - 1e-12 and high <= unpaired[1] + 1e-12

    check()


def test_before_after_table_prints_the_control_columns():
    from r3fast.train.metrics import format_before_after, paired_difference_interval

    def report(first, both, reflection_only, control_only, n=100):
        rescued, control = both + reflection_only, both + control_only
        return {"first_try_accuracy": first / n, "second_try_accuracy": (first + rescued) / n,
                "second_try_without_reflection_accuracy": (first + control) / n,
                "reflection_lift": (rescued - control) / n,
                "reflection_lift_ci95": list(paired_difference_interval(
                    first + both, reflection_only, control_only, n - first - both - reflection_only - control_only)),
                "counts": {"instances": n, "first_try_failed": n - first, "retry_passed": rescued,
                           "retry_without_reflection_passed": control}}

    text = format_before_after(report(15, 1, 1, 3), report(23, 0, 2, 1), 100)
    header, before, after = text.splitlines()[1:]
    assert "second try, no reflection" in header and "reflection lift" in header and "rescued with / without" in header
    assert before.split()[0] == "before" and "0.190 [" in before and "-0.020 [" in before and "2 / 4 of 85" in before
    assert after.split()[0] == "after" and "+0.010 [" in after and "2 / 1 of 77" in after
    assert format_before_after(None, report(23, 0, 2, 1), 100).count("\n") == 2  # no "before" row
