"""The ``recsys`` command line: one subcommand per stage of the loop, plus ``demo``.

Each stage's module declares its commands, arguments beside handlers; this one collects
them, loads the config and turns setup mistakes into one line of what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from commands import bench, catalog, dataset, demo, indexes, local, serve, slo, stream, train
from commands.command import Command
from recsys import logs
from recsys.config import Config, load_config
from recsys.errors import RecsysError

COMMANDS: tuple[Command, ...] = (
    *dataset.COMMANDS,
    *local.COMMANDS,
    *train.COMMANDS,
    *indexes.COMMANDS,
    *stream.COMMANDS,
    *catalog.COMMANDS,
    *serve.COMMANDS,
    *slo.COMMANDS,
    *bench.COMMANDS,
    *demo.COMMANDS,
)


class _Help(argparse.HelpFormatter):
    """Shows each option's default after its help, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="recsys", description=summary, formatter_class=_Help)
    config_help = "YAML config file (default: RECSYS_CONFIG, else the embedded defaults)"
    parser.add_argument("--config", type=Path, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(
            command.name, help=command.help, description=command.help, formatter_class=_Help
        )
        p.set_defaults(func=command.run)
        # Also after the command (`recsys serve --config x.yaml`); SUPPRESS keeps a value
        # given before it when this one is not.
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
        command.arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The server's logs are for machines (JSON lines); the other commands' are for people.
    logs.configure(structured=args.command == "serve")
    config: Config | None = None
    try:
        config = load_config(args.config)
        args.func(config, args)
    except RecsysError as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        explained = explain(exc, config)
        if explained is None:
            raise
        print(f"recsys {args.command}: error: {explained}", file=sys.stderr)
        return 2
    return 0


def explain(exc: BaseException, config: Config | None) -> str | None:
    """What to do about a dependency's error that a user causes by setup, not by a bug (a
    broker not running, a store not started or never initialised); ``None`` for anything
    else, which keeps its traceback."""
    import sqlite3

    from feast.errors import FeastObjectNotFoundException
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    if config is None:
        return None
    if isinstance(exc, KafkaConnectionError) or (
        isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc)
    ):
        return (
            f"no Kafka broker answers at {config.kafka.bootstrap_servers}: start one with "
            "`recsys broker` (or `make broker`), or set kafka.bootstrap_servers"
        )
    never_initialised = (
        f"the feature store under {config.feast_dir} was never initialised: run "
        "`recsys init-features`"
    )
    if isinstance(exc, FeastObjectNotFoundException):
        return never_initialised
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
        return never_initialised
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:
        return None
    if isinstance(exc, ConnectionError | TimeoutError):
        return (
            f"the Redis online store at {config.feast.redis} does not answer ({exc}): start "
            "redis-server there, or set feast.online_store: sqlite"
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
