"""The `yolor` command line reports a user's mistake in one line."""

import pytest

from yolor_keras import cli


@pytest.mark.parametrize(
    "error",
    [ValueError("'data.json': duplicate image id 7"), FileNotFoundError("no such file: 'x.keras'")],
)
def test_user_errors_are_one_line_with_exit_status_2(monkeypatch, capsys, error):
    parser, modules = cli.build_parser()

    def failing_run(args):
        raise error

    monkeypatch.setattr(modules["evaluate"], "run", failing_run)
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, modules))
    status = cli.main(["evaluate", "--model", "m.keras", "--data", "d.json"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.strip() == f"yolor evaluate: error: {error}"
    assert "Traceback" not in captured.err


def test_verbose_keeps_the_traceback(monkeypatch):
    parser, modules = cli.build_parser()

    def failing_run(args):
        raise ValueError("bad recipe")

    monkeypatch.setattr(modules["evaluate"], "run", failing_run)
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, modules))
    with pytest.raises(ValueError, match="bad recipe"):
        cli.main(["--verbose", "evaluate", "--model", "m.keras", "--data", "d.json"])
