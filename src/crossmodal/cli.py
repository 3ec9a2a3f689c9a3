"""The ``crossmodal`` command line: one subcommand per pipeline stage, plus ``recipe``.

Stage subcommands are generated from the job declarations in ``crossmodal.stages``: each field
is an option of the same name, so what a rule passes, what a user types and what the stage
reads cannot drift apart. Errors that are the user's to fix print one clear line and exit with
status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from crossmodal import jobs, stages  # noqa: F401 - importing stages registers every job
from crossmodal.errors import CrossmodalError

log = logging.getLogger("crossmodal")


def _recipe_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("export", help="record what replays TARGET exactly")
    ex.add_argument("target", help="e.g. results/okvqa/acc.json")
    ex.add_argument("-o", "--out", required=True, type=Path)
    ex.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    ex.add_argument("--directory", type=Path, default=Path("."))
    ve = sub.add_parser("verify", help="recompute output hashes after a replay")
    ve.add_argument("recipe", type=Path)
    ve.add_argument("--directory", type=Path, default=Path("."))
    co = sub.add_parser("config", help="write the recipe's resolved config as YAML")
    co.add_argument("recipe", type=Path)
    co.add_argument("-o", "--out", required=True, type=Path)


def _recipe(a: argparse.Namespace) -> None:
    """Export, verify or replay-configure an exact reproduction recipe."""
    from crossmodal import recipe

    if a.action == "export":
        recipe.export_target(a.target, a.configfile, a.out, a.directory)
    elif a.action == "config":
        recipe.write_config(a.recipe, a.out)
    else:
        recipe.verify_and_report(a.recipe, a.directory.resolve())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cls in jobs.JOBS.items():
        p = sub.add_parser(name, help=(cls.__doc__ or "").strip().splitlines()[0])
        jobs.add_arguments(p, cls)
        p.set_defaults(run=lambda a, cls=cls: jobs.from_namespace(cls, a).run())
    p = sub.add_parser("recipe", help=_recipe.__doc__)
    _recipe_args(p)
    p.set_defaults(run=_recipe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except CrossmodalError as exc:
        print(f"crossmodal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
