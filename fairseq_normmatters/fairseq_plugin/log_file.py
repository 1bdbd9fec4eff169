"""Each line once in fairseq-train's --log-file.

fairseq's progress_bar() adds a logging.FileHandler for --log-file to its module's logger on
every call, and fairseq-train calls it once an epoch without removing the earlier ones: epoch N's
records (each update's and the validations after it) were written N times, a WMT14 run of about
20 epochs wrote its last ones 20 times, and held a file handle open per epoch. Importing the
plugin makes progress_bar() add the handler only when the logger has none for that file, and
close the one it added for another file (a second training in the same process).
"""

import functools
import logging
import os


def log_each_line_once() -> None:
    """Wrap fairseq's progress_bar() as above (idempotent)."""
    from fairseq.logging import progress_bar as module

    make_bar = module.progress_bar
    if getattr(make_bar, "logs_each_line_once", False):
        return

    @functools.wraps(make_bar)
    def progress_bar(*args, log_file=None, **kwargs):
        if log_file is not None and not replace_other_log_files(module.logger, os.path.abspath(log_file)):
            log_file = None  # its handler is there already
        return make_bar(*args, log_file=log_file, **kwargs)

    progress_bar.logs_each_line_once = True
    module.progress_bar = progress_bar


def replace_other_log_files(logger: logging.Logger, path: str) -> bool:
    """Close and remove `logger`'s file handlers of other files than `path`; whether it then
    needs one for `path`."""
    needed = True
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        if handler.baseFilename == path:
            needed = False
        else:
            logger.removeHandler(handler)
            handler.close()
    return needed
