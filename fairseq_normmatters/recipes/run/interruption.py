"""A training asked to stop (SIGTERM: a preemption, a cancel, the end of a time limit, a node's
shutdown; SIGUSR2: SLURM's warning before the time limit; SIGINT: Ctrl-C) stops at the end of the update it is in, with its state
saved in checkpoint_last.pt, and exits with INTERRUPTED: fairseq-train resumes from exactly
that update.

fairseq itself has no handler and dies at once, losing every update since its last interval
checkpoint. Here each process that trains (every rank) records the signal; at the end of each
update fairseq's validate_and_save is wrapped so that the ranks agree (one all-reduce of a flag
an update, on several ranks) and, if any was asked, do what the update was due (a validation
and interval checkpoint at their intervals), save checkpoint_last.pt and exit. A process that
only waits for its rank processes (a spawn's parent) passes the signal on to them. A signal
outside the training loop (loading, evaluating) exits at once: nothing is lost there that a
rerun does not redo. A process that starts trainings and waits for them (compare.sh, a SLURM
job) passes the stop signals it gets on to them (PassedOn).
"""

import logging
import multiprocessing
import os
import signal
import sys
from typing import Optional

from ..common import INTERRUPTED

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

logger = logging.getLogger("fairseq_normmatters.interruption")


class StopRequest:
    """The signal that asked this process to stop (None: none yet) and whether its training
    loop is running (the loop then stops at its next update's end)."""
    signal: Optional[int] = None
    in_training_loop: bool = False


def on_stop_signal(number, frame) -> None:
    StopRequest.signal = number
    children = multiprocessing.active_children()
    for child in children:  # a spawn's parent: its rank processes train, it waits
        os.kill(child.pid, number)
    if not StopRequest.in_training_loop and not children:
        print(f"[one_run] {signal.Signals(number).name} outside the training loop: exiting", flush=True)
        sys.exit(INTERRUPTED)


def install() -> None:
    """Stop signals handled in this process, and fairseq's validate_and_save wrapped."""
    for number in STOP_SIGNALS:
        signal.signal(number, on_stop_signal)
    from fairseq_cli import train as fairseq_train
    if not getattr(fairseq_train.validate_and_save, "stops_on_signal", False):
        fairseq_train.validate_and_save = stopping_at_update_end(fairseq_train.validate_and_save)


def stopping_at_update_end(validate_and_save):
    """fairseq's validate_and_save, which runs at the end of every update, made to save the
    state and exit INTERRUPTED once any rank was asked to stop."""

    def wrapped(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
        StopRequest.in_training_loop = True
        asked = any_rank_asked(trainer)
        result = validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)
        if not asked:
            return result
        from fairseq import checkpoint_utils
        checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
        any_rank_asked(trainer)  # a barrier: no rank exits before the first has saved
        name = signal.Signals(StopRequest.signal).name if StopRequest.signal else "a signal to another rank"
        if trainer.is_data_parallel_master:
            print(f"[one_run] {name}: stopped at the end of update {trainer.get_num_updates()}, "
                  f"{what_was_saved(cfg.checkpoint)}", flush=True)
        sys.exit(INTERRUPTED)

    wrapped.stops_on_signal = True
    return wrapped


def what_was_saved(checkpointing) -> str:
    """The end of the stop's line: where the state was saved, or that nothing could be."""
    unsaved = [flag for flag, set_ in (("--no-save", checkpointing.no_save),
                                       ("--no-last-checkpoints", checkpointing.no_last_checkpoints)) if set_]
    if unsaved:
        return (f"its state NOT saved ({' and '.join(unsaved)}): the same command starts again from the last "
                f"checkpoint saved before, if any, in {checkpointing.save_dir}")
    return (f"its state saved in {os.path.join(checkpointing.save_dir, 'checkpoint_last.pt')}; the same command "
            "resumes from there")


def any_rank_asked(trainer) -> bool:
    """Whether this rank or any other was asked to stop (an all-reduce on several ranks, so that
    all stop at the same update)."""
    asked = StopRequest.signal is not None
    if trainer.data_parallel_world_size == 1:
        return asked
    import torch
    from fairseq.distributed import utils as distributed_utils
    flag = torch.tensor([float(asked)], device=trainer.device)
    distributed_utils.all_reduce(flag, group=trainer.data_parallel_process_group)
    return bool(flag.item() > 0)


def interrupted(error: BaseException) -> bool:
    """Whether `error`, raised where rank processes were joined, is a rank's INTERRUPTED exit."""
    return getattr(error, "exit_code", None) == INTERRUPTED


class PassedOn:
    """The stop signals this process gets while it waits for the training processes it started,
    each passed on to them (they save at the end of their update and exit INTERRUPTED), also to
    one started after the signal came. Where they share this process's group (a Ctrl-C, a SLURM
    step) they get it twice, which changes nothing. The handlers are this object's until
    restore()."""

    def __init__(self):
        self.received, self.processes = [], []
        self.previous = {number: signal.signal(number, self.on_signal) for number in STOP_SIGNALS}

    def on_signal(self, number, frame) -> None:
        self.received.append(number)
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(number)

    def started(self, process) -> None:
        self.processes.append(process)
        for number in self.received:
            process.send_signal(number)

    def ending(self) -> Optional[int]:
        """SIGTERM once it came (it ends a SLURM job, whatever warned before), else the first."""
        return signal.SIGTERM if signal.SIGTERM in self.received else next(iter(self.received), None)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
