"""Divergence is read from what fairseq says, in whatever process it said it: a spawned worker's
FloatingPointError reaches its parent only as text (torch's ProcessRaisedException, no cause)."""

import pytest
import torch.multiprocessing
from torch.multiprocessing import ProcessRaisedException

INCONSISTENT = ("Fatal error: gradients are inconsistent between workers. Try --ddp-backend=legacy_ddp. Or are you "
                "mixing up different generation of GPUs in training?\n--------------------------------------------"
                "------------------------------------\ngrad_norm across the workers:\n")


def raise_in_worker(rank: int, message: str) -> None:
    """A spawned worker that fails as fairseq's trainer does."""
    raise FloatingPointError(message)


@pytest.mark.parametrize("message, reason", [
    ("gradients are Nan/Inf", "gradients are Nan/Inf"),
    ("Minimum loss scale reached (0.0001). Your loss is probably exploding.",
     "Minimum loss scale reached (0.0001). Your loss is probably exploding."),
    (INCONSISTENT + "rank   0 = nan\nrank   1 = 3.25000000\n", "gradients are Nan/Inf (rank 0 of the workers)"),
    (INCONSISTENT + "rank   0 = 1.00000000\nrank   1 = 3.25000000\n", None),  # a real fault, not a divergence
])
def test_a_spawned_workers_floating_point_error_is_read_from_its_text(message, reason):
    from fairseq_normmatters.recipes.run.one_run import divergence_reason
    with pytest.raises(ProcessRaisedException) as raised:
        torch.multiprocessing.spawn(raise_in_worker, args=(message,), nprocs=1, join=True)
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert divergence_reason(raised.value) == reason


def test_a_floating_point_error_hidden_as_the_context_of_another_is_found():
    from fairseq_normmatters.recipes.run.one_run import divergence_reason
    try:
        try:
            raise FloatingPointError("gradients are Nan/Inf")
        except FloatingPointError:
            raise StopIteration  # fairseq's NanDetector failing under torch 2.13
    except StopIteration as error:
        assert divergence_reason(error) == "gradients are Nan/Inf"
    assert divergence_reason(RuntimeError("CUDA out of memory")) is None
