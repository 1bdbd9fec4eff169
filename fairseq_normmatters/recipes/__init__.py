"""The WMT14 de-en recipe: prepare, train, evaluate, collect (driven by the scripts/*.sh)."""

import shutil
import subprocess
import sys
from pathlib import Path


class RecipeError(Exception):
    """A problem the user can fix; the scripts print it as one line and exit 1."""


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


def run_main(main, program: str) -> None:
    """Run a recipe's main(); a RecipeError becomes one line on stderr and exit status 1."""
    try:
        main()
    except RecipeError as error:
        sys.exit(f"{program}: error: {error}")
