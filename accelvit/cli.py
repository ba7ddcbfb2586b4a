"""``python -m accelvit`` / ``accelvit``: the same pipeline, headless.

Every module in ``accelvit.commands`` that defines ``register(subparsers)`` adds one
subcommand; ``register`` adds a parser and sets ``func`` to a callable taking the parsed
args and returning an exit code. Errors of the accelvit family print their message and
exit with status 2; nothing prints a traceback at a user for a bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from . import commands, distributed
from .errors import AccelvitError, ConfigError

#: Subcommands that run under torchrun (distributed data parallel training and finetuning).
DISTRIBUTED_COMMANDS = ("train", "prune", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelvit", description="Prune Swin transformers and measure what it costs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--home", default=None,
                        help="run store folder (default: $ACCELVIT_HOME or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    # The global options also after the subcommand (``accelvit runs --home DIR``); SUPPRESS keeps
    # a value given before the subcommand when none is given after it.
    for sp in sub.choices.values():
        g = sp.add_argument_group("global options (also accepted before the subcommand)")
        g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
        g.add_argument("--home", default=argparse.SUPPRESS,
                       help="run store folder (default: $ACCELVIT_HOME or ./runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.home:
        os.environ["ACCELVIT_HOME"] = args.home
    try:
        _join_process_group(args)
        return int(args.func(args) or 0)
    except AccelvitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()


def _join_process_group(args: argparse.Namespace) -> None:
    """Under torchrun (``torchrun --nproc_per_node N -m accelvit train|prune|run ...``): join the process group
    and train on this rank's device (``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo)."""
    if not distributed.launched():
        return
    if args.command not in DISTRIBUTED_COMMANDS:
        raise ConfigError("command", f"'{args.command}' runs in one process; under torchrun only "
                                     f"{', '.join(DISTRIBUTED_COMMANDS)} do.")
    info = distributed.setup(getattr(args, "device", "auto") or "auto")
    args.device = info.device
    if info.rank != 0:  # one progress bar and one log for the group, from rank 0 (each rank's digest aside)
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger(distributed.__name__).setLevel(logging.INFO)
        if hasattr(args, "no_progress"):
            args.no_progress = True
