"""What a run prints on the console: its own messages, each once. Notices a user cannot act on (deprecation
warnings raised inside installed packages, Lightning's tips) go only to the log file (train.log).

`tidy_console()` is called by train.py once Hydra has set up logging, and again after Lightning is imported.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

FILE_ONLY = "file_only"  # a log record attribute: keep the record off the console
INSTALLED = tuple(
    {str(Path(p).resolve()) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
)
TIPS = ("💡 Tip",)  # Lightning's advertisements of its cloud services


class KeepOffConsole(logging.Filter):
    """Filter of the console handlers: drops records marked file-only and Lightning's tips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False) and not str(record.msg).startswith(TIPS)


def show_warning(
    message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kwargs: Any
) -> None:
    """`warnings.showwarning` through the logging: deprecations raised in installed packages are for their
    authors (file only); every other warning is shown and logged."""
    mine = not str(Path(filename).resolve()).startswith(INSTALLED)
    file_only = issubclass(category, (DeprecationWarning, FutureWarning)) and not mine
    logging.getLogger("py.warnings").warning(
        "%s:%d: %s: %s", filename, lineno, category.__name__, message, extra={FILE_ONLY: file_only}
    )


def tidy_console() -> None:
    """Route warnings through the logging, filter the console handlers of the root logger, and drop Lightning's
    own console handler (its records reach the root's handlers anyway: without this they print twice)."""
    root = logging.getLogger()
    if not any(isinstance(handler, logging.FileHandler) for handler in root.handlers):
        return  # no run log (a library call, a test): leave the logging as it is
    warnings.showwarning = show_warning
    for handler in root.handlers:
        if not isinstance(handler, logging.FileHandler) and not any(
            isinstance(f, KeepOffConsole) for f in handler.filters
        ):
            handler.addFilter(KeepOffConsole())
    lightning = logging.getLogger("lightning")
    for handler in list(lightning.handlers):
        if type(handler) is logging.StreamHandler and lightning.propagate:
            lightning.removeHandler(handler)
