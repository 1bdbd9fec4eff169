"""norm_transformer and norm_lstm through the real fairseq CLI on tiny data (CPU, seeded)."""

import importlib
import re
import shutil
import sys
from argparse import Namespace

import pytest
import torch
from torch.nn.utils import parametrize

from fairseq import checkpoint_utils, tasks, utils
from fairseq_normmatters import DeviationNorm, RMSNorm
from fairseq_normmatters.weight_norm import BoundedWeightNorm, row_norms

from cli import TINY_LSTM, TINY_TRANSFORMER, USER_DIR, epoch_losses, losses_per_update, output, run, train

# config -> (arch, extra flags, expected norm class or None, BWN expected)
CONFIGS = {
    "transformer_l2": ("norm_transformer_iwslt_de_en", TINY_TRANSFORMER, torch.nn.LayerNorm, False),
    "transformer_l1": ("norm_transformer_l1_iwslt_de_en", TINY_TRANSFORMER, DeviationNorm, False),
    "transformer_linf": ("norm_transformer_linf_iwslt_de_en", TINY_TRANSFORMER, DeviationNorm, False),
    "transformer_topk": ("norm_transformer_iwslt_de_en", TINY_TRANSFORMER + ["--norm-type", "topk", "--norm-topk", "4"],
                         DeviationNorm, False),
    "transformer_bwn": ("norm_transformer_bwn_iwslt_de_en", TINY_TRANSFORMER, None, True),
    "lstm_none": ("norm_lstm_iwslt_de_en", TINY_LSTM, None, False),
    "lstm_bwn": ("norm_lstm_bwn_iwslt_de_en", TINY_LSTM, None, True),
}
LAYER_NORMS_PER_TINY_TRANSFORMER = 2 * 2 + 2 * 3  # 2 encoder layers x 2, 2 decoder layers x 3


@pytest.fixture(scope="session")  # not module: the long tests run first (conftest.py), the rest later
def trained(data, tmp_path_factory):
    """config -> (save dir, train log); each config trains once per module."""
    runs = {}

    def get(config):
        if config not in runs:
            arch, extra, _, _ = CONFIGS[config]
            save_dir = tmp_path_factory.mktemp(config)
            runs[config] = (save_dir, train(data, save_dir, arch, *extra).stdout)
        return runs[config]
    return get


def load(checkpoint):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    return models[0], cfg, task


def fresh_model(cfg, task):
    """The model as fairseq-train built it before the first update (same seed)."""
    utils.set_torch_seed(cfg.common.seed)
    return task.build_model(cfg.model)


def bwn_weights(model):
    return {f"{name}.{w}": (getattr(m, w), chain[0].rho)
            for name, m in model.named_modules() if parametrize.is_parametrized(m)
            for w, chain in m.parametrizations.items() if isinstance(chain[0], BoundedWeightNorm)}


@pytest.mark.long
@pytest.mark.parametrize("config", CONFIGS)
def test_train_generate_validate(config, data, trained):
    arch, extra, norm_class, bwn = CONFIGS[config]
    save_dir, log = trained(config)
    losses = epoch_losses(log)
    assert len(losses) >= 3 and losses[-1] < losses[0] - 0.5, f"loss did not go down: {losses}"

    checkpoint = save_dir / "checkpoint_last.pt"
    model, cfg, task = load(checkpoint)  # torch.load(weights_only=True), the default
    stock = sum(type(m) is torch.nn.LayerNorm for m in model.modules())
    if config.startswith("transformer"):
        expected = norm_class or torch.nn.Identity
        swapped = sum(isinstance(m, expected) for m in model.modules())
        assert swapped == LAYER_NORMS_PER_TINY_TRANSFORMER
        assert stock == (LAYER_NORMS_PER_TINY_TRANSFORMER if norm_class is torch.nn.LayerNorm else 0)
    else:
        assert stock == 0

    said = re.findall(r"norm path: (\S+) over (\d+) features, float32 on cpu, accumulating in float32: (.*)", log)
    if norm_class is DeviationNorm:  # the path of the model's norms, said once (one width, one dtype)
        assert said == [(config.split("_")[1], "32", "native (auto's first choice on cpu)")]
    else:
        assert not said
    kept = "norm path: kept fairseq's 10 layer norms (torch.nn.modules.normalization.LayerNorm)"
    assert log.count(kept) == (norm_class is torch.nn.LayerNorm)

    weights = bwn_weights(model)
    if bwn:
        initial = bwn_weights(fresh_model(cfg, task))
        # transformer: per encoder layer q,k,v,out,fc1,fc2; per decoder layer 2 x (q,k,v,out), fc1, fc2
        # lstm: 2 nn.LSTM layers x (ih, hh), 2 LSTMCells x (ih, hh), attention input and output proj
        expected_count = 2 * 6 + 2 * 10 if config.startswith("transformer") else 4 + 4 + 2
        assert len(weights) == expected_count
        for name, (weight, rho) in weights.items():
            initial_weight, initial_rho = initial[name]
            assert torch.equal(rho, initial_rho), f"{name}: rho moved or seeds differ"
            assert not torch.allclose(weight, initial_weight), f"{name} did not change"
            torch.testing.assert_close(row_norms(weight, 2).flatten(), rho.expand(weight.shape[0]))
        assert not any("output_projection" in n or "fc_out" in n for n in weights)
    else:
        assert not weights

    generated = output("fairseq-generate", data, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu",
                       "--beam", "4", "--scoring", "sacrebleu", "--max-tokens", "2000")
    assert "BLEU = " in generated
    validated = output("fairseq-validate", data, "--task", "translation", "--user-dir", USER_DIR, "--path",
                       checkpoint, "--cpu", "--valid-subset", "test", "--max-tokens", "2000")
    test_loss = [float(x) for x in re.findall(r"valid on 'test' subset \| loss ([\d.]+)", validated)]
    assert test_loss and test_loss[0] < losses[0]


def test_native_norms_train_like_the_eager_reference(data, tmp_path, monkeypatch):
    """The default CPU path (native_rows.cpp) inside fairseq-train: the per-update losses of the
    eager formula. (The compiled and Triton paths are held to the same reference in
    test_kernels.py.)"""
    losses = {}
    for backend in ("eager", "native"):
        monkeypatch.setenv("NORMMATTERS_NORM_BACKEND", backend)
        result = train(data, tmp_path / backend, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER,
                       "--no-save", "--disable-validation", "--log-interval", "1", updates=12)
        losses[backend] = losses_per_update(result.stdout)
        assert "unavailable" not in result.stdout + result.stderr  # no fallback to eager
    assert len(losses["eager"]) == len(losses["native"]) == 12
    assert max(abs(a - b) for a, b in zip(losses["eager"], losses["native"])) < 2e-3, losses


def test_interactive_loads_checkpoint(data, trained):
    save_dir, _ = trained("transformer_l1")
    result = run("fairseq-interactive", data, "--user-dir", USER_DIR, "--path",
                 save_dir / "checkpoint_last.pt", "--cpu", "--source-lang", "de",
                 "--target-lang", "en", "--beam", "2", input="w1 w2 w3\nw4 w5\n")
    assert result.stdout.count("\nH-") == 2


def test_restore_l2_checkpoint_into_l1_model(data, trained, tmp_path):
    l2_dir, l2_log = trained("transformer_l2")
    l2_valid = epoch_losses(l2_log, "valid")
    result = train(data, tmp_path, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER,
                   "--restore-file", l2_dir / "checkpoint_last.pt", "--reset-optimizer",
                   "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler", "--lr", "1e-6",
                   updates=1)
    restored_valid = epoch_losses(result.stdout, "valid")[0]
    # a fresh model starts near l2_valid[0]; the restored one near where the l2 model ended
    assert abs(restored_valid - l2_valid[-1]) < 0.3 * (l2_valid[0] - l2_valid[-1])
    model, _, _ = load(tmp_path / "checkpoint_last.pt")
    assert isinstance(model.encoder.layers[0].final_layer_norm, DeviationNorm)


@pytest.mark.parametrize("flags,message", [
    (["--norm-type", "bogus"], "invalid choice: 'bogus' (choose from 'l2', 'l1', 'linf', 'topk', 'rms', 'none')"),
    (["--weight-norm-p", "3"], "invalid choice: '3' (choose from '1', '2', 'inf')"),
    (["--norm-constant", "huge"], "invalid --norm-constant 'huge'; allowed: paper, gaussian or a positive float"),
    (["--norm-accumulate", "fp8"], "invalid choice: 'fp8' (choose from 'float32', 'fp16', 'bf16')"),
])
def test_bad_flags_exit_with_argparse_message(data, tmp_path, flags, message):
    result = train(data, tmp_path, "norm_transformer_iwslt_de_en", *flags, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_topk_larger_than_model_dim_fails_at_build(data, tmp_path):
    result = train(data, tmp_path, "norm_transformer_iwslt_de_en", *TINY_TRANSFORMER,
                   "--norm-type", "topk", "--norm-topk", "100", check=False)
    assert result.returncode != 0
    assert "--norm-topk 100" in result.stderr and "1 <= k <= n=32, got k=100" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_norm_accumulate_without_layer_norms_fails_at_build(data, tmp_path):
    result = train(data, tmp_path, "norm_transformer_bwn_iwslt_de_en", *TINY_TRANSFORMER,
                   "--norm-accumulate", "fp16", check=False)
    assert result.returncode != 0
    assert "--norm-accumulate fp16: --norm-type none leaves no layer norm to accumulate in it" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_rms_norm_swaps_in(data, tmp_path):
    from fairseq_normmatters.convert import replace_layer_norms
    model = fresh_model(*load_config_and_task(data))
    count = replace_layer_norms(model, "rms")
    assert count == LAYER_NORMS_PER_TINY_TRANSFORMER
    assert sum(isinstance(m, RMSNorm) for m in model.modules()) == count


def load_config_and_task(data):
    from fairseq import options
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", USER_DIR, "--arch",
                                                "norm_transformer_iwslt_de_en", *TINY_TRANSFORMER, "--cpu"])
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    cfg = convert_namespace_to_omegaconf(args)
    return cfg, tasks.setup_task(cfg.task)


def test_importing_the_plugin_twice_registers_nothing_twice(tmp_path):
    """fairseq#2081: the installed package and a --user-dir copy under another module name."""
    copy = tmp_path / "normmatters_copy"
    shutil.copytree(USER_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("normmatters_copy")
        utils.import_user_module(Namespace(user_dir=USER_DIR))
        utils.import_user_module(Namespace(user_dir=str(copy)))
    finally:
        sys.path.remove(str(tmp_path))
    from fairseq.models import ARCH_MODEL_REGISTRY
    assert ARCH_MODEL_REGISTRY["norm_transformer_l1_wmt_en_de"].__module__ == "fairseq_normmatters.fairseq_plugin.models.transformer"
