"""The ``arnas-ray`` command: thin argument parsing that calls the library.

Each command group lives in its own ``_*.py`` module exposing ``register(subparsers)``; each
registered command sets ``func(args) -> int``. Bad input (any :class:`ArnasError`, or a
``ValueError``/``KeyError``/``TypeError``/``OSError``) prints one line to stderr,
``arnas-ray: error: FILE-OR-FIELD: what is wrong, what was expected``, and exits with status 2
(``-vv`` shows the traceback of the non-arnas-ray ones); nothing is started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from arnas_ray.cli import _results, _search, _space, _sweep, _train
from arnas_ray.errors import ArnasError, CheckpointError, LockError

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``--help`` lists them.
_GROUPS = (_space, _search, _train, _results, _sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arnas-ray",
        description="Accurate and robust neural architecture search (ARNAS) on Ray Tune.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _GROUPS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `arnas-ray genotype show ARNAS | head`
        return 0
    except (LockError, CheckpointError) as exc:
        print(f"arnas-ray: error: {exc}", file=sys.stderr)
        return 2
    except (ArnasError, ValueError, KeyError, TypeError, OSError) as exc:
        if not isinstance(exc, ArnasError) and args.verbose >= 2:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"arnas-ray: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arnas-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
