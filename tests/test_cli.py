"""The command line as its users meet it: options documented, ``--config`` on either side
of the command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from recsys.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, command in _commands().items()
        for action in command._actions
        if action.dest != "help" and not action.help
    ]
    assert missing == []


def test_defaults_are_shown_in_help() -> None:
    text = _commands()["bench-freshness"].format_help()
    assert "(default: 30.0)" in " ".join(text.split())


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_config_goes_before_or_after_the_command(before: bool) -> None:
    args = ["--config", "x.yaml", "serve"] if before else ["serve", "--config", "x.yaml"]
    assert build_parser().parse_args(args).config == Path("x.yaml")


def test_config_after_the_command_is_the_one_loaded(tmp_path: Path, capsys) -> None:
    (tmp_path / "artifacts" / "indexes" / "v1").mkdir(parents=True)
    config = tmp_path / "config.yaml"
    config.write_text(f"paths:\n  artifacts: {tmp_path / 'artifacts'}\n")
    assert main(["index", "rollback", "--config", str(config)]) != 0
    err = capsys.readouterr().err
    assert str(tmp_path / "artifacts" / "indexes") in err, err
