"""bf16 / fp16: every norm's error against a float64 reference, and --autocast-bf16 training on CPU."""

import re

import pytest
import torch

from fairseq import tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq import options

from cli import TINY_LSTM, TINY_TRANSFORMER, USER_DIR, epoch_losses, output, train
from test_fairseq_models import LAYER_NORMS_PER_TINY_TRANSFORMER
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


def build(data, arch, *flags):
    """(model, criterion, task) as fairseq-train builds them from these flags."""
    sizes = TINY_LSTM if arch.startswith("norm_lstm") else TINY_TRANSFORMER
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", USER_DIR, "--arch", arch, *sizes,
                                                "--cpu", "--max-tokens", "500", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    utils.set_torch_seed(1)
    return task.build_model(cfg.model), task.build_criterion(cfg.criterion), task


def first_sample(task):
    return next(iter(task.get_batch_iterator(task.dataset("train"), max_tokens=500).next_epoch_itr()))


@pytest.mark.parametrize("arch", ["norm_transformer_l1_iwslt_de_en", "norm_lstm_bwn_iwslt_de_en"])
def test_autocast_bf16_runs_the_training_forward_in_bf16_and_keeps_float32_weights(data, arch):
    model, criterion, task = build(data, arch, "--autocast-bf16")
    sample = first_sample(task)
    seen = set()  # (training?, dtype of a Linear's output)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda module, inputs, output: seen.add((model.training, output.dtype)))
    model.train()
    loss, _, _ = criterion(model, sample)
    loss.backward()
    model.eval()
    with torch.no_grad():
        criterion(model, sample)
    assert seen == {(True, torch.bfloat16), (False, torch.float32)}  # training in bf16, evaluation in float32
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ["norm_transformer_l1_iwslt_de_en", "norm_transformer_bwn_iwslt_de_en"])
def test_autocast_bf16_training_learns_and_resumes_without_the_flag(data, tmp_path, arch):
    """fairseq's --bf16 implies --tpu and crashes; --autocast-bf16 trains on CPU, and is no
    normalization flag: the run resumes without it."""
    losses = epoch_losses(train(data, tmp_path, arch, *TINY_TRANSFORMER, "--autocast-bf16", updates=20).stdout)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, f"loss did not go down: {losses}"
    resumed = train(data, tmp_path, arch, *TINY_TRANSFORMER, "--disable-validation", updates=22).stdout
    assert re.search(r"Loaded checkpoint \S+ \(epoch \d+ @ 20 updates\)", resumed)
    assert len(epoch_losses(resumed)) == 1


def test_autocast_bf16_refuses_to_train_float16_weights(data):
    """fairseq's --fp16 halves the model; evaluating such a model in fp16 stays allowed."""
    model, criterion, task = build(data, "norm_transformer_l1_iwslt_de_en", "--autocast-bf16")
    sample = first_sample(task)
    model.half().eval()
    with torch.no_grad():
        criterion(model, sample)
    model.train()
    with pytest.raises(ValueError, match="--autocast-bf16 trains float32 weights under bf16 autocast, but this "
                                         "model's weights are torch.float16 \\(fairseq's --fp16 or "
                                         "--memory-efficient-fp16\\): give only one of them"):
        criterion(model, sample)


@pytest.mark.parametrize("arch,norm_class", [("norm_transformer_iwslt_de_en", "L2Norm"),
                                             ("norm_transformer_l1_iwslt_de_en", "DeviationNorm")])
def test_norm_accumulate_reaches_every_layer_norm_of_a_built_model(data, arch, norm_class):
    model, _, _ = build(data, arch, "--norm-accumulate", "bf16")
    accumulating = [m for m in model.modules() if getattr(m, "accumulate", None) == "bf16"]
    assert len(accumulating) == LAYER_NORMS_PER_TINY_TRANSFORMER
    assert {type(m).__name__ for m in accumulating} == {norm_class}
    assert not any(isinstance(m, torch.nn.LayerNorm) and type(m).__name__ == "LayerNorm" for m in model.modules())
    plain, _, _ = build(data, arch)
    assert not any(getattr(m, "accumulates_narrow", False) for m in plain.modules())


def test_a_model_accumulating_in_bf16_trains_generates_and_keeps_its_flag_in_the_checkpoint(data, tmp_path):
    """fairseq-train with --norm-accumulate bf16, then fairseq-generate (the model is rebuilt
    from the checkpoint's flags), then a resume with float32 accumulation is refused by name."""
    flags = [*TINY_TRANSFORMER, "--norm-accumulate", "bf16"]
    log = train(data, tmp_path, "norm_transformer_linf_iwslt_de_en", *flags, updates=20).stdout
    losses = epoch_losses(log)
    assert losses[-1] < losses[0] - 0.5, f"loss did not go down: {losses}"
    assert log.count("norm path: linf over 32 features, float32 on cpu, accumulating in bf16: emulation "
                     "(no Triton kernel on this device)") == 1
    generated = output("fairseq-generate", data, "--user-dir", USER_DIR, "--path", tmp_path / "checkpoint_last.pt",
                       "--cpu", "--gen-subset", "test", "--beam", "2", "--max-tokens", "2000")
    assert "replaced 10 layer norms by linf (accumulating in bf16)" in generated
    assert "Generate test with beam=2" in generated
    refused = train(data, tmp_path, "norm_transformer_linf_iwslt_de_en", *TINY_TRANSFORMER, updates=22, check=False)
    assert refused.returncode != 0
    assert "--norm-accumulate bf16 in the checkpoint but unset now" in refused.stderr
