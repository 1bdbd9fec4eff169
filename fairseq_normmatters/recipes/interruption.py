"""A training asked to stop (SIGTERM: a preemption, a cancel, the end of a time limit; SIGUSR2:
SLURM's warning before the time limit) stops at the end of the update it is in, with its state
saved in checkpoint_last.pt, and exits with INTERRUPTED: fairseq-train resumes from exactly
that update.

fairseq itself has no handler and dies at once, losing every update since its last interval
checkpoint. Here each process that trains (every rank) records the signal; at the end of each
update fairseq's validate_and_save is wrapped so that the ranks agree (one all-reduce of a flag
an update, on several ranks) and, if any was asked, do what the update was due (a validation
and interval checkpoint at their intervals), save checkpoint_last.pt and exit. A process that
only waits for its rank processes (a spawn's parent) passes the signal on to them. A signal
outside the training loop (loading, evaluating) exits at once: nothing is lost there that a
rerun does not redo.
"""

import logging
import multiprocessing
import os
import signal
import sys
from typing import Optional

INTERRUPTED = 75  # the exit status of a run stopped by a signal with its state saved (EX_TEMPFAIL)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

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
            print(f"[one_run] {name}: stopped at the end of update {trainer.get_num_updates()}, its state saved in "
                  f"{os.path.join(cfg.checkpoint.save_dir, 'checkpoint_last.pt')}; the same command resumes from "
                  "there", flush=True)
        sys.exit(INTERRUPTED)

    wrapped.stops_on_signal = True
    return wrapped


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
