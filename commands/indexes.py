"""``recsys build-index`` and ``recsys index``: the FAISS index versions, built and managed."""

from __future__ import annotations

import argparse
from pathlib import Path

from commands.command import Command
from commands.dataset import load_dataset
from recsys.config import Config
from recsys.errors import RecsysError


def build(config: Config, args: argparse.Namespace) -> None:
    from index.build import build_index

    overrides: dict[str, object] = {}
    if args.synthetic is not None:
        overrides["synthetic_items"] = args.synthetic
    if args.type:
        overrides["type"] = args.type
    if args.catalog is not None:
        overrides["catalog"] = str(args.catalog)
    if args.engine:
        overrides["engine"] = args.engine
    if args.master:
        overrides["spark_master"] = args.master
    config = config.with_overrides({"index": overrides})
    build_index(config, load_dataset(config), publish=not args.no_publish, progress=True)


def build_index_arguments(bi: argparse.ArgumentParser) -> None:
    source = bi.add_mutually_exclusive_group()
    source.add_argument("--synthetic", type=int, metavar="N", help="a synthetic catalog of N items")
    bi.add_argument(
        "--type",
        choices=("auto", "flat", "ivf", "ivf-sq8", "hnsw"),
        help="the FAISS index kind (default: index.type; auto picks by catalog size)",
    )
    source.add_argument(
        "--catalog",
        type=Path,
        metavar="PARQUET",
        help="index this Parquet catalog (file or folder, with the data schema's item "
        "columns) instead of index.catalog / the data set's",
    )
    bi.add_argument(
        "--engine",
        choices=("local", "spark"),
        help="where the catalog is embedded and indexed (default: index.engine)",
    )
    bi.add_argument(
        "--master",
        metavar="URL",
        help="the Spark master for --engine spark (default: index.spark_master)",
    )
    bi.add_argument("--no-publish", action="store_true", help="write the version, keep CURRENT")


def manage_index(config: Config, args: argparse.Namespace) -> None:
    from index.versions import rollback, versions
    from recsys import artifacts

    root = config.indexes_dir
    if args.action == "rollback":
        before = artifacts.current(root).name
        print(f"CURRENT: {before} → {rollback(root, args.to)}")
        return
    try:
        current = artifacts.current(root).name
    except RecsysError:
        current = ""
    print(f"{'':2}{'version':<24} {'model':<24} {'items':>10} {'type':<16} {'recall@10':>9}")
    for version in versions(root):
        m = artifacts.read_manifest(root / version, verify=False)
        mark = "* " if version == current else "  "
        recall = m.get("recall_at_10")
        print(
            f"{mark}{version:<24} {m.get('model_version', '?'):<24} {m.get('items', 0):>10,} "
            f"{m.get('index_type', '?'):<16} {recall if recall is not None else '–':>9}"
        )


def manage_index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=("list", "rollback"), help="list the versions or roll CURRENT back"
    )
    p.add_argument("--to", help="rollback: this version (default: the previous)")


COMMANDS = (
    Command(
        "build-index",
        "embed the catalog and publish a FAISS index version",
        build,
        build_index_arguments,
    ),
    Command(
        "index",
        "list index versions (* = current) or roll back CURRENT",
        manage_index,
        manage_index_arguments,
    ),
)
