"""bf16 / fp16: every norm's error against a float64 reference, and bf16 training steps on CPU."""

import pytest
import torch

from fairseq import tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq import options

from cli import TINY_TRANSFORMER, USER_DIR, preprocess, write_parallel_text
from test_norms import OPTIONS, make, reference

KINDS = ["l1", "linf", "topk", "rms"]


def relative_error(kind, dtype, n=512, include_input_rounding=False):
    """Mean |y - y_ref| / mean |y_ref|, y_ref in float64 on the low-precision input (or on the
    exact input, so that the error of rounding x itself is counted too)."""
    x = torch.randn(256, n, dtype=torch.float64) * 3 + 5
    rounded = x.to(dtype)
    module = make(kind, n)
    exact_input = x if include_input_rounding else rounded.double()
    expected = reference(kind, exact_input, torch.ones(n), torch.zeros(n), 1e-5, **OPTIONS.get(kind, {}))
    with torch.no_grad():
        return float((module(rounded).double() - expected).abs().mean() / expected.abs().mean())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_arithmetic_error_no_worse_than_layer_norm(kind, dtype):
    ours, layer_norm = relative_error(kind, dtype), relative_error("l2", dtype)
    assert ours <= 1.05 * layer_norm, f"{kind} {dtype}: {ours:.2e} vs LayerNorm {layer_norm:.2e}"


@pytest.fixture(scope="module")
def task_and_args(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    data = preprocess(write_parallel_text(root / "raw"), root / "bin")

    def build(arch):
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, [str(data), "--user-dir", USER_DIR, "--arch", arch,
                                                    *TINY_TRANSFORMER, "--cpu", "--max-tokens", "500"])
        cfg = convert_namespace_to_omegaconf(args)
        task = tasks.setup_task(cfg.task)
        task.load_dataset("train")
        return cfg, task
    return build


@pytest.mark.parametrize("arch", ["norm_transformer_l1_iwslt_de_en", "norm_transformer_bwn_iwslt_de_en"])
def test_bf16_autocast_training_steps_stay_finite_and_learn(task_and_args, arch):
    """fairseq's --bf16 implies --tpu and crashes, so bf16 runs as torch autocast around the model."""
    cfg, task = task_and_args(arch)
    utils.set_torch_seed(1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=500, seed=1).next_epoch_itr(shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step, sample in zip(range(12), batches):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, sample_size, _ = criterion(model, sample)
        optimizer.zero_grad()
        (loss / sample_size).backward()
        optimizer.step()
        losses.append(float(loss) / sample_size)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])
