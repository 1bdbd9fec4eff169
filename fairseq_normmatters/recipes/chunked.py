"""A function mapped over the chunks of a stream on worker processes, in order, with a bounded
read-ahead: what lets prepare handle a corpus of any size in the same memory."""

import itertools
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
    with Pool(workers, initializer, initargs) as pool:
        pending = deque()
        for chunk in chunked:
            pending.append(pool.apply_async(function, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
