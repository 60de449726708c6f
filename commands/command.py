"""What a ``recsys`` subcommand is: its name, its help, its arguments and its handler.

Each stage's module (``commands/train.py``, ``commands/serve.py``, …) declares its commands
with their arguments beside their handlers; ``commands/cli.py`` only collects them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from recsys.config import Config

Handler = Callable[[Config, argparse.Namespace], None]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes none beyond ``--config``."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``arguments`` adds its own options to its parser, ``run`` handles it."""

    name: str
    help: str
    run: Handler
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
