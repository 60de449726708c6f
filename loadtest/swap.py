"""``recsys loadtest --swap``: an index hot swap in the middle of a steady run.

A second index version of the current model is built into a scratch artifacts root (the
served version's folder and the models folder are links to the real ones), so the real
``CURRENT`` never moves.
Halfway through the run it is published there and the server is told to reload (admin
``Reload``: load beside, verify, warm, swap); the calls due during the swap are compared
with the rest.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from loadtest.report import Summary, split
from localservices.procs import child, write_config
from recsys import artifacts
from recsys.config import Config
from recsys.errors import RecsysError
from recsys.v1 import admin_pb2, admin_pb2_grpc


def swap_pair(config: Config, out: Path) -> tuple[Config, str]:
    """A scratch artifacts root under ``out`` serving the current index version, with a second
    version of the same model freshly built beside it (``recsys build-index``), so a swap
    never moves the real ``CURRENT``. Returns (a config using it, the version to swap to)."""
    root = out / "artifacts"
    shutil.rmtree(root, ignore_errors=True)  # a rerun into the same folder
    (root / "indexes").mkdir(parents=True)
    (root / "models").symlink_to(config.models_dir)
    serving = artifacts.current(config.indexes_dir)
    (root / "indexes" / serving.name).symlink_to(serving)
    cfg = config.with_overrides({"paths": {"artifacts": str(root)}})
    artifacts.publish(cfg.indexes_dir, serving.name)
    print("==> building a second index version to swap to", flush=True)
    with child("build-index", write_config(cfg, out / "build.yaml"), ["build-index"], out) as p:
        if p.wait(timeout=1800):
            raise RecsysError(f"recsys build-index failed (exit {p.returncode}); see {out}")
    fresh = artifacts.current(cfg.indexes_dir).name
    artifacts.publish(cfg.indexes_dir, serving.name)
    return cfg, fresh


@dataclass
class Swap:
    """``at`` seconds after it is called: publishes index version ``to`` and has the server
    reload it (admin ``Reload`` on every worker, in turn: load beside, verify, warm, swap);
    keeps when that started and ended (unix seconds)."""

    config: Config
    admins: list[str]
    to: str
    at: float
    started: float = 0.0
    ended: float = 0.0

    def __call__(self) -> None:
        time.sleep(self.at)
        self.started = time.time()
        artifacts.publish(self.config.indexes_dir, self.to)
        for admin in self.admins:
            with grpc.insecure_channel(admin) as channel:
                stub = admin_pb2_grpc.RecommenderAdminStub(channel)
                reply = stub.Reload(admin_pb2.ReloadRequest(), timeout=300)
            if reply.index_version != self.to:
                raise RecsysError(f"{admin} serves {reply.index_version}, not {self.to}")
        self.ended = time.time()

    def report(self, samples: np.ndarray) -> tuple[str, dict[str, object], Summary]:
        """Calls due from the swap's start to a second after its end, against the rest:
        (summary line, facts for ``result.json``, the calls during the swap)."""
        during, outside = split(samples, self.started, self.ended + SWAP_DRAIN_S)
        ratio = during.p99 / outside.p99
        text = (
            f"swap to {self.to}: {self.ended - self.started:.2f} s; calls due during it and "
            f"{SWAP_DRAIN_S:g} s after: {during.requests:,}, {during.failures} failed, "
            f"p99 {during.p99:.2f} ms vs {outside.p99:.2f} ms outside ({ratio:.2f}x)"
        )
        facts = {
            "to": self.to,
            "seconds": self.ended - self.started,
            "during": asdict(during),
            "outside": asdict(outside),
            "p99_ratio": ratio,
        }
        return text, facts, during


SWAP_DRAIN_S = 1.0
"""After a swap ends, calls due this long still count as during it (the queue drains)."""
