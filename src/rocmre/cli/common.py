"""Helpers shared by the command modules: one-line errors, user-error handling, the data folder option."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer

logger = logging.getLogger("rocmre.cli")

#: Settings of every command: help wraps at up to 120 columns (never below the terminal's own width).
CONTEXT_SETTINGS = {"max_content_width": 120}
#: Exit status of a user error found while running (bad data, missing file); 2 is for bad options.
USER_ERROR = 1


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit (no traceback).

    The line is coloured only when stderr is a terminal (``typer.secho`` strips the colour otherwise).
    """
    one_line = " ".join(str(message).split())
    typer.secho(f"error: {one_line}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@contextmanager
def user_errors(context: str = "", code: int = USER_ERROR) -> Iterator[None]:
    """Turn errors a user can cause (``ValueError``, ``OSError``, ``ImportError`` of extras) into one line and exit
    ``code``, prefixed with ``context``; ``rocmre -v`` logs the traceback."""
    try:
        yield
    except (ValueError, OSError, ImportError) as e:
        logger.info("details", exc_info=True)
        reason = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in reason:
            reason = f"{e.filename}: {reason}"
        fail(f"{context}: {reason}" if context else reason, code)


def use_data_dir(data_dir: Path | None) -> None:
    """Make ``--data-dir`` the data folder of this command: where relative dataset paths are looked up (the same
    as setting ``$ROCMRE_DATA``). A folder that does not exist is a usage error."""
    if data_dir is None:
        return
    if not data_dir.is_dir():
        fail(f"--data-dir {data_dir} is not a folder")
    os.environ["ROCMRE_DATA"] = str(data_dir.resolve())


def data_dir_option() -> Path | None:
    """The ``--data-dir`` option, the same on ``train``, ``evaluate`` and ``data stats``."""
    return typer.Option(None, "--data-dir", file_okay=False,
                        help="Folder where relative dataset paths are looked up (default: $ROCMRE_DATA, else ./data, "
                             "else ../shared/data).")


# -- the decision-path options of `predict` and `serve` (the same text on both) ------------------------------------

def type_prior_option() -> bool | None:
    return typer.Option(None, "--type-prior/--no-type-prior",
                        help="Soft entity-type prior on or off (default: the model's setting); helps relations added "
                             "with type signatures.")


def type_prior_scope_option() -> str | None:
    return typer.Option(None, "--type-prior-scope",
                        help="Whom the type prior penalises: 'all' relations, or 'added_vs_trained' (all, but only "
                             "to decide whether an added relation beats the trained ones) (default: the model's "
                             "setting, else all).")


def precision_option() -> str | None:
    return typer.Option(None, "--precision",
                        help="fp32, bf16 (faster on CPUs with native bfloat16) or auto (default: what the model was "
                             "validated with).")

