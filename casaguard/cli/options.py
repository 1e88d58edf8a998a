"""Command-line options: casaguard's own for every sub-command that runs guarded tasks,
and the drop-ins' CASA parameters, built from their signatures."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

from casaguard.sandbox.callspec import DEFAULT_LOCK_TIMEOUT_S


def add_task_options(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    """Add --timeout, --lock-timeout, --no-strict, --mode and --json to ``parser``."""
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds before a child is killed"
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT_S,
        help="seconds to wait while another process holds an MS's lock "
        f"(default {DEFAULT_LOCK_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="accept a normal return even if CASA logged SEVERE lines",
    )
    parser.add_argument(
        "--mode",
        choices=["spawn", "template"],
        default=None,
        help="spawn: a fresh interpreter per call; template: a fork of a warm template "
        "(default: $CASAGUARD_MODE, else template)",
    )
    parser.add_argument("--json", action="store_true", help=json_help)


#: What each CASA parameter of a drop-in means on the command line. Names,
#: order and defaults come from the drop-in's signature (``casaguard.ft`` /
#: ``casaguard.clearcal``), so only the words live here.
CASA_PARAMETER_HELP: dict[str, str] = {
    "vis": "the Measurement Set",
    "field": "field selection, e.g. 0 or 3C286 (default: all)",
    "spw": "spectral window selection, e.g. 0:2~5 (default: all)",
    "intent": "scan intent selection (default: all)",
    "model": "model image (repeat for Taylor terms)",
    "nterms": "Taylor terms of the model images (default 1)",
    "reffreq": "reference frequency of the Taylor terms, e.g. 1.4GHz",
    "complist": "component list to transform (a .cl table)",
    "incremental": "add to the existing model instead of replacing",
    "usescratch": "write the MODEL_DATA column",
    "addmodel": "also reset MODEL_DATA (creating it if missing)",
}


def casa_parameters(drop_in: Callable[..., Any]) -> list[inspect.Parameter]:
    """The CASA parameters of a drop-in: its positional-or-keyword ones, in order."""
    parameters = inspect.signature(drop_in).parameters.values()
    return [p for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]


def add_casa_parameters(parser: argparse.ArgumentParser, drop_in: Callable[..., Any]) -> None:
    """One option per CASA parameter of ``drop_in``, built from its signature.

    ``vis`` is the positional argument; a False flag is ``--name``; a parameter
    that takes a list (``model``) is repeated; others take one value of their
    default's type.
    """
    for parameter in casa_parameters(drop_in):
        name, default = parameter.name, parameter.default
        help_text = CASA_PARAMETER_HELP[name]
        if name == "vis":
            parser.add_argument(name, help=help_text)
        elif default is False:
            parser.add_argument(f"--{name}", action="store_true", help=help_text)
        elif "Sequence[" in str(parameter.annotation):
            parser.add_argument(f"--{name}", action="append", default=None, help=help_text)
        else:
            parser.add_argument(f"--{name}", type=type(default), default=default, help=help_text)


def casa_arguments(args: argparse.Namespace, drop_in: Callable[..., Any]) -> dict[str, Any]:
    """The parsed CASA parameters of ``drop_in``, by name (an unrepeated list is its default)."""
    return {
        p.name: p.default if getattr(args, p.name) is None else getattr(args, p.name)
        for p in casa_parameters(drop_in)
    }
