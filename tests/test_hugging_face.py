"""replace_layer_norms in Hugging Face transformers models built from small configs (nothing is
downloaded): every nn.LayerNorm is swapped, the state_dict keys stay, the model trains and
generates, and its state_dict loads into a freshly swapped model. T5's and Llama's RMS norms are
their own classes, not nn.LayerNorm, and are left as they are."""

import pytest
import torch

from fairseq_normmatters import DeviationNorm, replace_layer_norms
from fairseq_normmatters.convert import find_layer_norms

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SEQ2SEQ = dict(SMALL, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
               max_position_embeddings=64, decoder_start_token_id=0, dropout=0.0)


def marian():
    return transformers.MarianMTModel(transformers.MarianConfig(**SEQ2SEQ))


def bart():
    return transformers.BartForConditionalGeneration(transformers.BartConfig(**SEQ2SEQ))


def bert():
    return transformers.BertForMaskedLM(transformers.BertConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **SMALL, n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0))


MODELS = {"marian": marian, "bart": bart, "bert": bert, "gpt2": gpt2}
#: layer norms per model with 2 layers (per stack): Marian post-norm 2 per encoder layer, 3 per
#: decoder layer; BART the same plus an embedding norm per stack; BERT 2 per layer plus the
#: embeddings' and the LM head's; GPT-2 2 per block plus the final one
LAYER_NORMS = {"marian": 2 * 2 + 2 * 3, "bart": 2 * 2 + 2 * 3 + 2, "bert": 2 * 2 + 2, "gpt2": 2 * 2 + 1}


def batch(name):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (4, 10), generator=generator)
    if name in ("marian", "bart"):
        return {"input_ids": ids, "labels": ids.flip(1)}
    return {"input_ids": ids, "labels": ids}


def swapped(name, kind="l1"):
    model = MODELS[name]()
    count = replace_layer_norms(model, kind)
    return model, count


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_norm_is_swapped_keeping_the_state_dict_keys(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    keys = list(model.state_dict())
    originals = {id(norm): norm.weight.detach().clone() for _, _, norm in find_layer_norms(model)}
    assert len(originals) == LAYER_NORMS[name]
    assert replace_layer_norms(model, "l1") == LAYER_NORMS[name]
    assert list(model.state_dict()) == keys
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, DeviationNorm) for m in model.modules()) == LAYER_NORMS[name]


@pytest.mark.parametrize("name", MODELS)
def test_a_swapped_model_trains_generates_and_reloads(name):
    torch.manual_seed(0)
    model, _ = swapped(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs = batch(name)
    losses = []
    model.train()
    for _ in range(12):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    model.eval()
    prompt = inputs["input_ids"][:2, :5]
    with torch.no_grad():
        if name == "bert":
            predicted = model(input_ids=prompt).logits.argmax(-1)
            assert predicted.shape == prompt.shape
        else:
            predicted = model.generate(prompt, max_new_tokens=4, do_sample=False)
            assert predicted.shape[0] == 2 and predicted.shape[1] > (5 if name == "gpt2" else 1)
        expected = model(**inputs).logits

    torch.manual_seed(123)  # other initial weights
    fresh, _ = swapped(name)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, expected)


@pytest.mark.parametrize("config", ["T5Config", "LlamaConfig"])
def test_t5_and_llama_rms_norms_are_not_layer_norms_and_stay(config):
    if config == "T5Config":
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2))
    norms = [type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__]
    assert norms and replace_layer_norms(model, "l1") == 0
    assert [type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__] == norms
