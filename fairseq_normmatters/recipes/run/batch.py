"""The batch of a fairseq-train command as a run records and the tables say it: where it trains,
the tokens an update sees, and reading a flag's value from a command line."""

def last_value(command, flag: str, default=None):
    """The value of the last `flag` of a command line, else `default`."""
    values = [command[i + 1] for i, argument in enumerate(command[:-1]) if argument == flag]
    return values[-1] if values else default


def effective_batch(command, gpus: int) -> dict:
    """{"gpus", "ranks", "max_tokens", "update_freq", "tokens"} of a fairseq-train command run on
    `gpus` GPUs here (its --distributed-world-size where it names one; on CPU "gpus" is 0 and
    the ranks are one_run's CPU processes): the batch an update sees at most."""
    cpu = "--cpu" in command
    world = whole(last_value(command, "--distributed-world-size", 1 if cpu else gpus or 1))
    max_tokens, update_freq = whole(last_value(command, "--max-tokens")), whole(last_value(command, "--update-freq", 1))
    known = None not in (world, max_tokens, update_freq)
    return {"gpus": 0 if cpu else world, "ranks": world, "max_tokens": max_tokens, "update_freq": update_freq,
            "tokens": world * max_tokens * update_freq if known else None}


def whole(value):
    """int(value), or None for a value fairseq-train will refuse itself (with its own message)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def batch_text(batch: dict) -> str:
    """'8 GPUs x 4096 tokens x 1 = 32768 tokens an update' (the CPU: 'the CPU x ...', or '2 CPU
    ranks x ...' for a run over several CPU processes)."""
    where = batch_where(batch)
    if batch["gpus"]:
        where += f" GPU{'s' * (batch['gpus'] != 1)}"
    elif where == "CPU":
        where = "the CPU"
    return f"{where} x {batch['max_tokens']} tokens x {batch['update_freq']} = {batch['tokens']} tokens an update"


def batch_where(batch: dict) -> str:
    """Where a batch (effective_batch) trains: '8' (GPUs), 'CPU', or '2 CPU ranks'."""
    ranks = batch.get("ranks") or 1
    return str(batch["gpus"]) if batch["gpus"] else ("CPU" if ranks == 1 else f"{ranks} CPU ranks")


def layout(batch: dict) -> str:
    """'8 GPUs x 4096 tokens x 1': GPUs x --max-tokens x --update-freq."""
    return batch_text(batch).split(" = ")[0]
