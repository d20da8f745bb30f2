"""The ``xaikit`` command line: a thin layer that parses, calls the API, prints and exits.

Each command lives in its own module of this package with four names:
``NAME`` (the sub-command), ``HELP`` (one line for ``xaikit --help``),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).

Every command's parser is built before the command line is parsed, so a command module's
top-level imports stay light: no torch, numpy, matplotlib, PIL, tqdm, ... (seconds, paid
by ``xaikit --version`` and every ``--help``). Names that help texts list come from
:mod:`xaikit._names`; ``run`` and its helpers import the library where they use it.
``tests/cli/test_startup.py`` checks this.

Exit codes: 0 success; 2 bad usage or input (one line on stderr, no traceback);
1 an internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from xaikit._version import __version__
from xaikit.errors import XaikitError

if TYPE_CHECKING:
    from xaikit.distributed import Group as DistributedGroup

# Order is the order of ``xaikit --help``.
COMMAND_MODULES = [
    "zoo",
    "methods",
    "layers",
    "train",
    "convert",
    "explain",
    "filters",
    "evaluate",
    "report",
    "demo",
    "serve",
]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2

#: Commands that split their work over the ranks of ``torchrun``; the others run on rank 0
#: while the other ranks wait for it (xaikit.distributed).
DISTRIBUTED_COMMANDS = frozenset({"explain", "filters", "evaluate", "train"})


class UsageError(XaikitError):
    """Raised by the argument parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, raised, not printed with the usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _commands() -> list[ModuleType]:
    return [importlib.import_module(f"xaikit.cli.{name}") for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one sub-parser per command module."""
    parser = _Parser(
        prog="xaikit",
        description="Explainable AI for convolutional and recurrent networks: train small "
        "reference models, generate heatmaps, inspect learned filters.",
        epilog="Every command has --help. Exit codes: 0 ok, 2 bad usage or input, "
        "1 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"xaikit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the command line: ``xaikit: warning: <message>``, one line
    on stderr, without the source location and line Python adds."""
    text = " ".join(str(message).split())
    print(f"xaikit: warning: {text}", file=sys.stderr)


@contextmanager
def _cli_warnings() -> Iterator[None]:
    """Show Python warnings as one-line ``xaikit: warning:`` messages while a command runs."""
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def _precheck_models(args: argparse.Namespace) -> None:
    """Refuse a ``--model`` checkpoint whose card asks for a model past the size limits before
    the command imports torch (~640 MB on its own): the full loader checks it again."""
    if getattr(args, "model_option", None):
        return  # options change the architecture: the loader judges the result
    specs = getattr(args, "model", None)
    from xaikit._model_limits import precheck_checkpoint

    for spec in [specs] if isinstance(specs, str) else list(specs or []):
        if isinstance(spec, str):
            precheck_checkpoint(spec)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xaikit`` console script; returns the exit code.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs this: the process group is
    joined first, only rank 0 prints, and a failure on any rank fails every rank with that
    rank's message (:mod:`xaikit.distributed`)."""
    from xaikit import distributed

    try:
        group = distributed.init_from_env()
    except XaikitError as err:
        print(f"xaikit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with distributed.quiet_unless_main(group):
            return _main(argv, group)
    finally:
        distributed.shutdown()


def _main(argv: Sequence[str] | None, group: DistributedGroup) -> int:
    from xaikit import distributed
    from xaikit.cli._common import cli_wording

    parser = build_parser()
    try:
        with distributed.guard(group):
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return EXIT_OK
            _precheck_models(args)
            local = args.command not in DISTRIBUTED_COMMANDS
            if group.distributed and local and not group.is_main:
                return EXIT_OK  # rank 0 runs it; the guard's last meeting waits for it
            # A command that is not distributed runs on rank 0 as a group of one.
            solo = distributed.alone() if local else contextlib.nullcontext()
            with _cli_warnings(), solo:
                code = int(args._run(args) or EXIT_OK)
            sys.stdout.flush()  # inside the try: a reader that left is handled below
            # The run's verdict (e.g. 2: some input was bad) is rank 0's, which saw every
            # rank's results; the others finished their share.
            return code if group.is_main else EXIT_OK
    except UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except distributed.RemoteRankError as err:
        print(f"xaikit: error: {cli_wording(str(err))}", file=sys.stderr)
        return EXIT_USAGE if err.usage else EXIT_INTERNAL
    except XaikitError as err:
        print(f"xaikit: error: {cli_wording(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xaikit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `xaikit methods | head`: the reader left. Python would print a traceback at exit
        # while flushing stdout; point stdout at /dev/null so it does not.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
