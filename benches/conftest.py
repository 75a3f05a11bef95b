"""Shared bench plumbing: a bench reports its speed as ratios against a baseline measured in the same run."""

import pytest

_LINES: list[str] = []


@pytest.fixture(scope="session")
def report_ratio():
    """report_ratio(line): print `line` in the closing summary of the bench run."""
    return _LINES.append


def pytest_terminal_summary(terminalreporter):
    if _LINES:
        terminalreporter.section("speed ratios (same run, same inputs)")
        for line in _LINES:
            terminalreporter.write_line(line)


def pytest_collect_file(file_path, parent):
    # `pytest benches` collects bench_*.py too; a file named on the command line is collected by pytest itself.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
