"""One writer per run folder: SAVE_DIR/run.lock, an flock held by the process that trains there.

Whatever starts a training (compare.sh's launchers, train_{benchmark}.sh) takes the lock before
it writes anything in the folder (run.json first) and hands it to the training process it starts
(the same open file, inherited through $NORMMATTERS_RUN_LOCK_FD), which keeps it until it exits:
a starter killed on its own leaves the lock with its still-running trainer, and a second trainer
on the folder is refused, the holder named (pid, host, since when). The kernel releases an flock
when its last holder exits, however it ends (a kill -9 included), so no lock outlives its run.
"""

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Dict, Iterator, Optional

from ..common import RecipeError
from .folder import RunFolder

HANDED_LOCK_VARIABLE = "NORMMATTERS_RUN_LOCK_FD"


class RunFolderBusy(RecipeError):
    """Another process trains in this run folder."""


def lock_path(save_dir) -> Path:
    return RunFolder(save_dir).lock_path


def holder(save_dir) -> Optional[str]:
    """Who holds the run folder's lock ('pid 123 on node1, since 2026-12-05 13:04:26'), or None
    when no process does."""
    path = lock_path(save_dir)
    if not path.is_file():
        return None
    try:
        take_lock(path).close()
    except LockHeld as held:
        return held.holder
    return None


class LockHeld(Exception):
    """Another process holds the lock; `holder` names it."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def take_lock(path: Path, wait: bool = False) -> IO:
    """The flock of the file `path` (made if missing) taken, waiting for it where `wait`, this
    process named in it (pid, host, since when); LockHeld naming the holder otherwise."""
    lock = Path(path).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        lock.seek(0)
        named = lock.read().strip() or "a process that has not said its pid yet"
        lock.close()
        raise LockHeld(named) from None
    name_holder(lock)
    return lock


def take(save_dir) -> IO:
    """The run folder's lock, taken now (the folder made if missing); RunFolderBusy naming the
    holder when another process has it."""
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    try:
        return take_lock(lock_path(save_dir))
    except LockHeld as held:
        raise RunFolderBusy(f"{save_dir} is being trained by another process ({held.holder}); nothing was written "
                            "there: wait for it to end, or stop it with kill -TERM PID (it saves its state at "
                            "the end of its update and the same command resumes from there)") from None


def name_holder(lock: IO) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    lock.flush()


@contextmanager
def holding(save_dir) -> Iterator[IO]:
    """take(save_dir) for the time of the block, released after it (unless handed on)."""
    lock = take(save_dir)
    try:
        yield lock
    finally:
        lock.close()


def handed_on(lock: IO) -> Dict[str, str]:
    """The environment of a process started next that inherits `lock` (it must also be passed
    the descriptor: subprocess's pass_fds, or os.set_inheritable before an exec)."""
    return {HANDED_LOCK_VARIABLE: str(lock.fileno())}


def claim(save_dir) -> IO:
    """In the process that trains: the lock its starter handed on (then named for this process),
    else taken here (take). Kept open for as long as this process lives."""
    handed = os.environ.pop(HANDED_LOCK_VARIABLE, None)
    if handed is not None:
        lock = inherited(int(handed), save_dir)
        if lock is not None:
            name_holder(lock)
            return lock
    return take(save_dir)


def inherited(descriptor: int, save_dir) -> Optional[IO]:
    """The inherited descriptor as a file, if it is open on this run folder's lock file."""
    try:
        same = os.path.samestat(os.fstat(descriptor), os.stat(lock_path(save_dir)))
    except OSError:
        return None
    return os.fdopen(descriptor, "a+") if same else None
