"""The command line as its users meet it: options documented, ``--config`` on either side
of the command."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands.cli import build_parser, main
from localservices.procs import free_port, write_config
from recsys.config import Config


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


def _run(config: Config, tmp_path: Path, *args: str) -> tuple[int, str]:
    """``recsys --config <config> *args`` in a process of its own: (exit code, stderr)."""
    path = write_config(config, tmp_path / "config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    return done.returncode, done.stderr


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("recsys ")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err[-3000:]


def test_a_down_broker_is_one_line(feature_store: Config, tmp_path: Path) -> None:
    config = feature_store.with_overrides(
        {
            "kafka": {
                "bootstrap_servers": f"127.0.0.1:{free_port('127.0.0.1')}",
                "bootstrap_timeout_ms": 2000,
            }
        }
    )
    _one_line(*_run(config, tmp_path, "ingest"), "no Kafka broker answers", "recsys broker")


def test_an_unreachable_store_is_one_line(feature_store: Config, tmp_path: Path) -> None:
    config = feature_store.with_overrides(
        {
            "paths": {"state": str(tmp_path / "state")},
            "feast": {"online_store": "redis", "redis": f"127.0.0.1:{free_port('127.0.0.1')}"},
        }
    )
    _one_line(*_run(config, tmp_path, "init-features"), "does not answer", "redis-server")
    _one_line(*_run(config, tmp_path, "ingest"), "does not answer", "start it first")


def test_a_store_never_initialised_is_one_line(feature_store: Config, tmp_path: Path) -> None:
    config = feature_store.with_overrides({"paths": {"state": str(tmp_path / "state")}})
    _one_line(*_run(config, tmp_path, "ingest"), "never initialised", "recsys init-features")
    _one_line(*_run(config, tmp_path, "serve"), "never initialised", "recsys init-features")


def test_a_missing_model_or_index_is_one_line(feature_store: Config, tmp_path: Path) -> None:
    config = feature_store.with_overrides({"paths": {"artifacts": str(tmp_path / "none")}})
    _one_line(*_run(config, tmp_path, "serve"), "recsys train", "recsys build-index")
    _one_line(*_run(config, tmp_path, "build-index"), "recsys train")
