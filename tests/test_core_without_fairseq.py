"""The norm core works in any PyTorch model without importing fairseq; the fairseq side is
installed where fairseq loads the plugin, or by one explicit call. Each case runs in a fresh
interpreter, since this test process has installed the plugin already."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=REPO, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_core_normalizes_and_swaps_the_norms_of_a_plain_torch_model_without_fairseq():
    python("""
        import argparse, sys
        import torch
        from torch import nn
        from fairseq_normmatters import apply_weight_norm, bake_weight_norms, build_norm, replace_layer_norms

        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
        model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        assert replace_layer_norms(model, "l1") == 4
        assert sum(type(m).__name__ == "DeviationNorm" for m in model.modules()) == 4
        names = apply_weight_norm(model, "bwn")
        assert len(names) == 6, names  # 2 layers x (attention out_proj, linear1, linear2)
        x = torch.randn(3, 5, 32)
        model(x).square().sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        y = build_norm("linf", 32)(x)
        assert torch.isfinite(y).all()
        bake_weight_norms(model)

        assert "fairseq" not in sys.modules, sorted(m for m in sys.modules if m.startswith("fairseq"))
        assert argparse.Namespace not in torch.serialization.get_safe_globals()  # torch.load untouched
    """)


def test_importing_the_package_after_fairseq_installs_the_plugin():
    """What --user-dir does: fairseq imports itself, then the plugin."""
    python("""
        import fairseq
        from fairseq import checkpoint_utils
        from fairseq.models import ARCH_MODEL_REGISTRY
        from fairseq.trainer import Trainer
        import fairseq_normmatters

        assert "norm_transformer_l1_wmt_en_de" in ARCH_MODEL_REGISTRY and "norm_lstm_bwn_wmt_en_de" in ARCH_MODEL_REGISTRY
        assert checkpoint_utils.load_checkpoint_to_cpu.explains_unreadable
        assert Trainer.get_train_iterator.builds_the_first_epochs_batches
    """)


def test_a_python_user_of_fairseq_who_imported_the_package_first_installs_it_with_one_call():
    python("""
        import fairseq_normmatters
        from fairseq.models import ARCH_MODEL_REGISTRY

        assert "norm_transformer_l1_wmt_en_de" not in ARCH_MODEL_REGISTRY
        fairseq_normmatters.install_fairseq_plugin()
        fairseq_normmatters.install_fairseq_plugin()  # idempotent
        assert "norm_transformer_l1_wmt_en_de" in ARCH_MODEL_REGISTRY
    """)


PACKAGE = REPO / "fairseq_normmatters"
FAIRSEQ_SIDE = ("fairseq", "fairseq_cli", "fairseq_normmatters.fairseq_plugin", "fairseq_normmatters.recipes")


def core_modules():
    """The core's modules: the package's top level and kernels/ (not fairseq_plugin/, recipes/)."""
    return sorted([*PACKAGE.glob("*.py"), *(PACKAGE / "kernels").glob("*.py")])


def imported_modules(path: Path):
    """Every module that `path` imports anywhere (also inside functions), as an absolute name."""
    package = ".".join(path.relative_to(REPO).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            yield from ([module] if node.module else [f"{module}.{alias.name}" for alias in node.names])


def test_no_core_module_imports_the_fairseq_side():
    found = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                 if name.split(".")[0] in FAIRSEQ_SIDE[:2]
                                                 or name.startswith(FAIRSEQ_SIDE[2:]))
             for path in core_modules()}
    assert len(found) >= 12 and "fairseq_normmatters/kinds.py" in found
    # the one door: install_fairseq_plugin(), called where fairseq is loaded
    assert {path: names for path, names in found.items() if names} == \
        {"fairseq_normmatters/__init__.py": ["fairseq_normmatters.fairseq_plugin"]}
