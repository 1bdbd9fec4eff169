"""A function mapped over the chunks of a stream on worker processes, in order, with a bounded
read-ahead: what lets prepare handle a corpus of any size in the same memory."""

import contextlib
import itertools
import signal
from collections import deque
from multiprocessing import Pool

CHUNK = 20_000  # items (pairs, lines) one worker handles at once


def chunks(items, size: int = CHUNK):
    """Lists of `size` items of an iterable, the last one shorter."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def map_chunks(function, chunked, workers: int, initializer=None, initargs=()):
    """function(chunk) for each chunk of `chunked`, in order, on `workers` processes, with at
    most 2 x workers chunks in flight (Pool.imap would read the whole input ahead into memory)."""
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        yield from map(function, chunked)
        return
    with worker_pool(workers, initializer, initargs) as pool:
        pending = deque()
        for chunk in chunked:
            pending.append(pool.apply_async(function, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


STOPPING = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def worker_pool(workers: int, initializer=None, initargs=()):
    """multiprocessing.Pool(workers, initializer, initargs), terminated when the block ends, whose
    workers Pool.terminate can stop. A recipe's process may turn SIGTERM into KeyboardInterrupt
    (run_main); a worker that inherited that handler could catch the SIGTERM of terminate
    inside its queue's lock and live on, and the parent would wait for it forever. So the
    signals stay blocked while the workers are forked, and each worker, before anything else,
    takes SIGTERM's default (death) and leaves Ctrl-C to the parent."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        pool = Pool(workers, start_worker, (initializer, initargs))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    with pool:
        yield pool


def start_worker(initializer, initargs) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
    if initializer:
        initializer(*initargs)
