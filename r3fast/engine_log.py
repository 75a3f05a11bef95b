"""The engine libraries' chatter (vLLM, transformers, torch, ...) goes to a log file, not the terminal.

    route_engine_logs(run_dir / "engine.log", verbose=cfg.logging.verbose)
    with engine_stderr_to_log():   # C++ warnings and vLLM's own load bars, written straight to fd 2
        engine = VLLMEngine(path)

r3fast's own prints and progress bars stay on the terminal. `verbose=True` undoes the routing: the
libraries log to the terminal as they do by default. Safe to call again, before or after the
libraries are imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Top-level loggers (and packages, for Python warnings) whose output is the engine's, not r3fast's.
ENGINE_LIBRARIES = ("vllm", "transformers", "huggingface_hub", "torch", "triton", "safetensors")

# What the last quiet call changed, so that the next call can put it back first (idempotence).
_undo: list = []
_log_path: Path | None = None  # where the routed logs go; None: not routed (or routed to nowhere)
_routed = False


def route_engine_logs(path: str | os.PathLike | None, verbose: bool) -> None:
    """Send the ENGINE_LIBRARIES' logs, warnings and progress bars to `path` (None: drop them).

    With `verbose`, route nothing and write no file: the libraries keep their own terminal output.
    """
    global _log_path, _routed
    while _undo:
        _undo.pop()()
    _log_path, _routed = None, False
    if verbose:
        return
    _configure_libraries_now()
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH") is None:
        # vLLM applies a dictConfig (a stdout handler) when it builds an engine, unless told not to;
        # read lazily from the environment, so this works after `import vllm` too.
        _set_env("VLLM_CONFIGURE_LOGGING", "0")
    if path is None:
        handler: logging.Handler = logging.NullHandler()
    else:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _log_path = Path(path)
    _undo.append(handler.close)
    for name in ENGINE_LIBRARIES:
        _reroute_logger_family(name, handler)
    _route_warnings(handler)
    _disable_library_progress_bars()
    _routed = True


@contextmanager
def engine_stderr_to_log() -> Iterator[None]:
    """Point fd 2 at the engine log while the block runs (the engine's construction): C/C++ code such
    as torch's NUMA-binding warning and vLLM's checkpoint-loading bar write there, past Python logging.
    A no-op unless route_engine_logs routed quietly. An error leaving the block still reaches the
    terminal: fd 2 is restored before it propagates to whoever reports it."""
    if not _routed:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(_log_path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _configure_libraries_now() -> None:
    # transformers, huggingface_hub and torch attach their terminal handlers when first imported;
    # importing them first lets us replace those handlers instead of being joined by them later.
    import huggingface_hub.utils.logging  # noqa: F401
    import torch  # noqa: F401
    import transformers.utils.logging as transformers_logging

    transformers_logging.get_logger()


def _set_env(name: str, value: str) -> None:
    before = os.environ.get(name)
    os.environ[name] = value
    _undo.append(lambda: os.environ.__setitem__(name, before) if before is not None else os.environ.pop(name, None))


def _is_terminal_handler(handler: logging.Handler) -> bool:
    # by its stream, not its class: torch's trace handler is a StreamHandler that writes nowhere by default
    stream = getattr(handler, "stream", None)
    if isinstance(handler, logging.FileHandler) or stream is None:
        return False
    if stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        return True
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):  # in-memory streams (e.g. a test's capture)
        return False


def _reroute_logger_family(name: str, handler: logging.Handler) -> None:
    """`name` and its existing descendants lose their terminal handlers; `name` gets `handler`."""
    descendants = [lg for n, lg in list(logging.root.manager.loggerDict.items())
                   if n.startswith(name + ".") and isinstance(lg, logging.Logger)]  # not PlaceHolders
    for logger in [logging.getLogger(name), *descendants]:
        terminal = [h for h in logger.handlers if _is_terminal_handler(h)]
        if logger.name != name and not terminal:
            continue
        saved = (list(logger.handlers), logger.propagate, logger.level)
        _undo.append(lambda lg=logger, s=saved: _restore_logger(lg, *s))
        for h in terminal:
            logger.removeHandler(h)
        logger.addHandler(handler)
        # Not up to the root logger: its handlers (or logging's last resort) print to the terminal.
        logger.propagate = False
        if logger.name == name and logger.level == logging.NOTSET:
            # vLLM sets INFO itself only when it configures logging, which it no longer does
            logger.setLevel(os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper() if name == "vllm" else logging.INFO)


def _restore_logger(logger: logging.Logger, handlers: list, propagate: bool, level: int) -> None:
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)


def _library_folders() -> tuple[str, ...]:
    folders = []
    for name in ENGINE_LIBRARIES:
        spec = importlib.util.find_spec(name)  # top-level: finds the folder without importing it
        if spec is not None and spec.submodule_search_locations:
            folders += [os.path.join(f, "") for f in spec.submodule_search_locations]
    return tuple(folders)


def _route_warnings(handler: logging.Handler) -> None:
    """Warnings raised in the libraries' own files go to `handler`; all others show as before."""
    folders = _library_folders()
    shown_before = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if file is None and str(filename).startswith(folders):
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
            handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, None, None))
        else:
            shown_before(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    _undo.append(lambda: setattr(warnings, "showwarning", shown_before))


def _disable_library_progress_bars() -> None:
    # transformers' "Loading weights" / "Writing model shards", and huggingface_hub's download bars
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    if transformers_logging.is_progress_bar_enabled():
        transformers_logging.disable_progress_bar()
        _undo.append(transformers_logging.enable_progress_bar)
    if not hub_utils.are_progress_bars_disabled():
        hub_utils.disable_progress_bars()
        _undo.append(hub_utils.enable_progress_bars)
