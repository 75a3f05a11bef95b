"""A quiet terminal: engine libraries log to a file (r3fast.engine_log), and `r3fast train --show-config`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import pytest

from r3fast.cli import main
from r3fast.engine_log import engine_stderr_to_log, route_engine_logs
from r3fast.train.config import TrainConfig

SHOWN = re.compile(r"^(?P<key>\S+) = (?P<value>.*?)(?:  \(default (?P<default>.*)\))?\s+# (?P<comment>.*)$")


def leaf_defaults(obj=None, prefix=""):
    """{dotted key: default} of every leaf field, walked with dataclasses.fields."""
    obj = TrainConfig() if obj is None else obj
    found = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found.update(leaf_defaults(value, f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = value
    return found


def shown_config(capsys, *argv):
    assert main(["train", "--show-config", *argv]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("#"):
            continue
        m = SHOWN.match(line)
        assert m, f"unparsable --show-config line: {line!r}"
        rows[m["key"]] = m
    return rows


def test_show_config_lists_every_key_with_default_and_comment(capsys, monkeypatch):
    import r3fast.models

    def no_model(*args, **kwargs):
        raise AssertionError("--show-config loaded a model")

    monkeypatch.setattr(r3fast.models, "load", no_model)
    monkeypatch.setattr(r3fast.models, "materialize", no_model)
    defaults = leaf_defaults()
    rows = shown_config(capsys)
    assert list(rows) == list(defaults)
    for key, default in defaults.items():
        row = rows[key]
        assert row["comment"].strip(), f"{key} has no comment in r3fast/train/config.py"
        assert json.loads(row["default"] or row["value"]) == default, key


def test_show_config_is_the_effective_config(capsys):
    rows = shown_config(capsys, "--preset", "countdown-cpu", "loss.beta=0.5", "--verbose")
    assert json.loads(rows["loss.beta"]["value"]) == 0.5 and json.loads(rows["loss.beta"]["default"]) == 0.0
    assert json.loads(rows["logging.verbose"]["value"]) is True


def test_train_help_names_show_config(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--show-config lists every key" in " ".join(capsys.readouterr().out.split())


@pytest.fixture
def routing(monkeypatch):
    """Start unrouted (an earlier test in this process may have routed: in-process `r3fast eval` does),
    and undo the routing after the test."""
    route_engine_logs(None, verbose=True)
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    yield
    route_engine_logs(None, verbose=True)


def test_engine_logs_go_to_the_file_and_r3fast_output_to_the_terminal(tmp_path, capfd, recwarn, monkeypatch, routing):
    # the terminal handler vLLM's logging setup adds when it builds an engine (made here: the test's stderr)
    monkeypatch.setattr(logging.getLogger("vllm"), "handlers", [logging.StreamHandler(sys.stderr)])
    log = tmp_path / "engine.log"
    route_engine_logs(log, verbose=False)
    route_engine_logs(log, verbose=False)  # twice: still one handler, one copy of each record
    logging.getLogger("vllm.v1.worker").warning("vllm-record")
    logging.getLogger("transformers.modeling_utils").warning("transformers-record")
    torch_file = os.path.join(importlib.util.find_spec("torch").submodule_search_locations[0], "x.py")
    warnings.warn_explicit("torch-warning", FutureWarning, torch_file, 1)
    warnings.warn_explicit("r3fast-warning", UserWarning, str(Path(__file__)), 1)
    print("r3fast-print")
    out, err = capfd.readouterr()
    written = log.read_text()
    assert "r3fast-print" in out
    for marker in ("vllm-record", "transformers-record", "torch-warning"):
        assert marker not in out + err and written.count(marker) == 1, marker
    assert [str(w.message) for w in recwarn] == ["r3fast-warning"]  # not a library's: shown as before
    assert os.environ["VLLM_CONFIGURE_LOGGING"] == "0"  # vLLM adds no stdout handler when it builds an engine

    from transformers.utils import logging as transformers_logging

    assert not transformers_logging.is_progress_bar_enabled()

    route_engine_logs(log, verbose=True)
    logging.getLogger("vllm.v1.worker").warning("verbose-record")
    assert "verbose-record" in capfd.readouterr().err and "verbose-record" not in log.read_text()
    assert "VLLM_CONFIGURE_LOGGING" not in os.environ and transformers_logging.is_progress_bar_enabled()


def test_fd2_goes_to_the_file_only_around_engine_construction(tmp_path, capfd, routing):
    log = tmp_path / "engine.log"
    route_engine_logs(log, verbose=False)
    with pytest.raises(ValueError, match="bad model"), engine_stderr_to_log():
        os.write(2, b"c++ numa warning\n")
        raise ValueError("bad model")
    os.write(2, b"r3fast error\n")
    err = capfd.readouterr().err
    assert "c++ numa warning" in log.read_text() and "c++ numa warning" not in err
    assert "r3fast error" in err


def test_fd2_untouched_when_verbose(tmp_path, capfd, routing):
    route_engine_logs(tmp_path / "engine.log", verbose=True)
    with engine_stderr_to_log():
        os.write(2, b"shown\n")
    assert "shown" in capfd.readouterr().err and not (tmp_path / "engine.log").exists()
