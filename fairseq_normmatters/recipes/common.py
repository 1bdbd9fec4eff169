"""What every stage of the recipes shares: its errors and exit statuses, one rule for a line,
running fairseq's tools (in this process or out of it), run_main (a script's one-line error), the
prepared directory's direction, and files written whole or not at all (writing_together)."""

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable, Tuple

INTERRUPTED = 75  # the exit status of a run stopped by a signal with its state saved (EX_TEMPFAIL)
#: how a line of a run's log that names the step starting begins ("== training: COMMAND")
STEP_PREFIX = "== "
#: the script a process runs for, as its messages name it (set for a process exec'd by another)
PROGRAM_VARIABLE = "NORMMATTERS_PROGRAM"


class RecipeError(Exception):
    """A problem the user can fix; the scripts print it as one line and exit 1."""


class RunInterrupted(RecipeError):
    """A training stopped on a signal with its state saved (interruption.INTERRUPTED); the
    scripts print it as one line and exit INTERRUPTED."""


def text_lines(text: str) -> list:
    """The lines of a text as fairseq, Moses and sacreBLEU's files count them: split at "\\n"
    only (a form feed, U+2028 or another separator that str.splitlines() also splits at stays
    inside its line), a final "\\n" ending the last line, not starting another. The one rule
    for prepare, evaluation and the table."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def read_lines(path) -> list:
    """text_lines of a UTF-8 file."""
    return text_lines(Path(path).read_text(encoding="utf-8"))


def tool_path(tool: str) -> str:
    """A console script of this Python's environment (fairseq-train, ...), else from PATH."""
    local = Path(sys.executable).parent / tool
    found = str(local) if local.exists() else shutil.which(tool)
    if found is None:
        raise RecipeError(f"{tool} not found next to {sys.executable} nor on PATH: is fairseq installed?")
    return found


def run_tool(tool, *args, quiet=False) -> str:
    """Run a fairseq console script; returns its stdout, raises RecipeError with its log tail."""
    command = [tool_path(tool), *map(str, args)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not quiet:
        sys.stdout.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-25:])
        raise RecipeError(f"{tool} exited with {result.returncode}:\n{tail}")
    return result.stdout


#: fairseq's console scripts that can run inside this process (call_fairseq)
FAIRSEQ_MAINS = {"fairseq-preprocess": "fairseq_cli.preprocess", "fairseq-train": "fairseq_cli.train",
                 "fairseq-generate": "fairseq_cli.generate", "fairseq-validate": "fairseq_cli.validate",
                 "fairseq-interactive": "fairseq_cli.interactive"}
LOG_FORMAT = logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s", "%Y-%m-%d %H:%M:%S")


def call_fairseq(tool, *args, stdin: str = "") -> Tuple[int, str, str]:
    """fairseq's console script `tool` (FAIRSEQ_MAINS) with these arguments, run in this process
    as in a new one (which would import fairseq again: seconds per call): (exit status, what it
    printed and logged, its errors: argparse's message or the traceback of an exception)."""
    from .. import install_fairseq_plugin
    from ..kernels import backends
    install_fairseq_plugin()  # --user-dir finds the package imported already, so it does not
    module = importlib.import_module(FAIRSEQ_MAINS[tool])
    forget_the_previous_runs_best_checkpoint()
    backends.announce_again()  # a new process says each norm's path in its own log
    status = 0
    with console_of(FAIRSEQ_MAINS[tool], [tool, *map(str, args)], stdin) as (output, errors):
        try:
            module.cli_main()
        except SystemExit as stop:
            if stop.code == INTERRUPTED:  # a stop signal (interruption.py): the whole process ends
                raise
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if not isinstance(stop.code, (int, type(None))):
                errors.write(f"{stop.code}\n")
        except Exception:
            status = 1
            errors.write(traceback.format_exc())
    return status, output.getvalue(), errors.getvalue()


@contextlib.contextmanager
def console_of(logger_name: str, argv: list, stdin: str):
    """sys.argv, sys.stdin, stdout, stderr and logging (INFO, on stdout, as fairseq's scripts log)
    as a new process of a console script would have them; yields (stdout, stderr) as StringIOs.
    Everything is restored afterwards, including the handlers of the script's own logger
    `logger_name` (fairseq-preprocess adds its log file there on every call)."""
    output, errors, root, own = io.StringIO(), io.StringIO(), logging.getLogger(), logging.getLogger(logger_name)
    saved = root.handlers[:], root.level, own.handlers[:], sys.argv, sys.stdin
    handler = logging.StreamHandler(output)
    handler.setFormatter(LOG_FORMAT)
    root.handlers, sys.argv, sys.stdin = [handler], argv, io.StringIO(stdin)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(errors):
            yield output, errors
    finally:
        for added in set(own.handlers) - set(saved[2]):
            added.close()
        root.handlers, own.handlers, sys.argv, sys.stdin = saved[0], saved[2], saved[3], saved[4]
        root.setLevel(saved[1])


def forget_the_previous_runs_best_checkpoint() -> None:
    """fairseq keeps the best validation loss of a training in an attribute of its
    save_checkpoint function; a second fairseq-train in the same process would compare its own
    losses with the first one's and leave checkpoint_best.pt unwritten."""
    from fairseq import checkpoint_utils
    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best


def run_fairseq(tool, *args) -> str:
    """call_fairseq(tool, *args)'s output; a failure raises RecipeError with its last lines."""
    status, output, errors = call_fairseq(tool, *args)
    if status != 0:
        tail = "\n".join((output + errors).splitlines()[-25:])
        raise RecipeError(f"{tool} failed (exit status {status}):\n{tail}")
    return output


def run_main(main, program: str, sigterm_interrupts: bool = False) -> None:
    """Run a recipe's main(); a RecipeError becomes one line on stderr and exit status 1 (a
    RunInterrupted: INTERRUPTED), Ctrl-C (and SIGTERM where `sigterm_interrupts`: a script that
    trains nothing, whose every write is whole or not at all) one line and exit status 130."""
    if sigterm_interrupts:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        check_environment()
        main()
    except RunInterrupted as error:
        print(f"{program}: {error}", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except RecipeError as error:
        sys.exit(f"{program}: error: {error}")
    except KeyboardInterrupt:
        print(f"{program}: interrupted; every file it writes is written whole or not at all, so "
              "rerunning the same command redoes what was not finished", file=sys.stderr)
        sys.exit(130)


def check_environment() -> None:
    """RecipeError for a setting of the norm backends in the environment that no norm would
    take ($NORMMATTERS_NORM_BACKEND, $NORMMATTERS_STRICT_BACKENDS), before anything runs."""
    from ..kernels import backends
    try:
        backends.requested_backend()
        backends.strict()
    except ValueError as error:
        raise RecipeError(str(error)) from None


def check_not_half_prepared(prepared: Path) -> None:
    """Raise RecipeError if a prepare script started PREPARED and did not finish it (its
    prepare.json says "in progress"), naming that script. A directory prepared by other means passes."""
    marker = Path(prepared) / "prepare.json"
    state = json.loads(marker.read_text()) if marker.is_file() else {"status": "done"}
    if state.get("status") != "done":
        script = state.get("script", "prepare_wmt14_de_en.sh")
        raise RecipeError(f"{prepared} is half prepared ({marker} says the preparation did not finish): "
                          f"rerun scripts/{script} with the same arguments first")


#: translation direction -> (source language, target language)
DIRECTIONS = {"de-en": ("de", "en"), "en-de": ("en", "de")}


def prepared_direction(prepared: Path) -> str:
    """The direction PREPARED was made for (prepare.json's settings; de-en if it says none)."""
    marker = Path(prepared) / "prepare.json"
    state = json.loads(marker.read_text()) if marker.is_file() else {}
    return state.get("settings", {}).get("direction", "de-en")


@contextlib.contextmanager
def writing_together(*paths):
    """Temporary paths beside `paths` (NAME.tmp) for the block to write, renamed over `paths`
    together when it ends: each path is its old file or the whole new one, never a part (Ctrl-C,
    a kill, a full disk), and files that belong together (the two sides of a split, a .bin and
    its .idx) are replaced at once. When the block fails the temporaries are removed and an
    OSError (ENOSPC: a full disk) becomes one RecipeError naming the paths and the space left."""
    paths = [Path(path) for path in paths]
    temporaries = [path.with_name(path.name + ".tmp") for path in paths]
    try:
        yield temporaries
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    except BaseException as error:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        if not isinstance(error, Exception) or isinstance(error, RecipeError):
            raise
        raise RecipeError(f"writing {', '.join(map(str, paths))} failed ({type(error).__name__}: {error}); "
                          f"{free_space(paths[0].parent)} free on its disk; nothing of it was kept") from None


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(temporary) next to `path`, then renamed to `path` (writing_together)."""
    with writing_together(path) as (temporary,):
        write(temporary)


def write_text_atomically(path: Path, text: str) -> None:
    """Path(path).write_text(text) through write_atomically."""
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def free_space(directory: Path) -> str:
    """The space left on the disk of `directory`, e.g. '1.2 GB', as a phrase."""
    try:
        return f"{shutil.disk_usage(directory).free / 1e9:.1f} GB"
    except OSError:
        return "unknown space"
