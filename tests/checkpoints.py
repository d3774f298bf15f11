"""GPT-2 checkpoints in the published format, built with transformers (random init).

The hub is out of reach in tests, so we make files the way the published ones were made:
``GPT2LMHeadModel(...).save_pretrained(dir, safe_serialization=True)``, at the exact shapes of distilgpt2
and the uer Chinese model, plus a tiny one for fast checks.
"""

from __future__ import annotations

from pathlib import Path

# Published shapes. distilgpt2: 6 layers x 768, 12 heads, 50257 tokens; the uer Chinese model is the same
# network over a 21128-token BERT vocabulary.
TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=999, eos_token_id=999)
SMALL_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=50257, n_positions=256)  # real GPT-2 vocabulary
DISTILGPT2 = dict(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
UER = dict(n_layer=6, n_embd=768, n_head=12, vocab_size=21128, n_positions=1024)

# transformers' default init (std 0.02, unit LayerNorm, zero biases) gives near-uniform logits, where a
# wrong computation can still look close. A wider init and random LayerNorm/bias values make every
# parameter matter and the logits peaked.
INIT_STD = 0.1


def build_gpt2_dir(path: Path, seed: int = 0, **config_overrides) -> Path:
    """Save a random-init GPT2LMHeadModel to ``path`` as config.json + model.safetensors; returns path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(initializer_range=INIT_STD, **config_overrides)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # LayerNorm gains/shifts and linear biases
                centre = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
                param.normal_(centre, 0.1)
    model.save_pretrained(path, safe_serialization=True)
    return path


def load_hf_model(path: Path):
    """The transformers model saved at ``path``, in eval mode."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path).eval()
