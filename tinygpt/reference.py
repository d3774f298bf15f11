"""GPT-2's forward pass in plain NumPy: the test oracle, and the place to read how a token is computed.

No cache, no kernels, no tricks; every function is one step of the model with its tensor shapes in a
comment (T = tokens, C = n_embd, H = heads, D = C/H, I = inner width, V = vocab). It computes in float64 so
that, as an oracle, it is more exact than the float32 engines it checks.
"""

from __future__ import annotations

import numpy as np

from .config import GPT2Config


def gelu(x):  # [...] -> [...]
    # GPT-2's tanh approximation of GELU ("gelu_new").
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):  # [..., n] -> [..., n], each row sums to 1
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # subtracting the max keeps exp from overflowing
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm(x, gamma, beta, eps):  # [T, C], [C], [C] -> [T, C]
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(variance + eps) + beta


def linear(x, w, b):  # [T, in], [in, out], [out] -> [T, out]   (GPT-2 stores weights as [in, out])
    return x @ w + b


def attention(q, k, v, scale):  # [T, D], [T, D], [T, D] -> [T, D]
    T = q.shape[0]
    causal = np.triu(np.full((T, T), -np.inf), k=1)  # token t may look at tokens 0..t only
    return softmax(q @ k.T * scale + causal) @ v  # [T, T] weights times [T, D] values


def multi_head_attention(x, w, prefix, n_head, scale):  # [T, C] -> [T, C]
    qkv = linear(x, w[prefix + "c_attn.weight"], w[prefix + "c_attn.bias"])  # [T, 3C]
    q, k, v = np.split(qkv, 3, axis=-1)  # 3 x [T, C]
    heads = [
        attention(qh, kh, vh, scale)  # [T, D]
        for qh, kh, vh in zip(*(np.split(m, n_head, axis=-1) for m in (q, k, v)))  # H x [T, D] each
    ]
    return linear(np.hstack(heads), w[prefix + "c_proj.weight"], w[prefix + "c_proj.bias"])  # [T, C]


def feed_forward(x, w, prefix):  # [T, C] -> [T, C]
    hidden = gelu(linear(x, w[prefix + "c_fc.weight"], w[prefix + "c_fc.bias"]))  # [T, I]
    return linear(hidden, w[prefix + "c_proj.weight"], w[prefix + "c_proj.bias"])  # [T, C]


def block(x, w, layer, config):  # [T, C] -> [T, C]
    p = f"h.{layer}."
    eps = config.layer_norm_epsilon
    scale = config.attention_scale(layer)  # 1/sqrt(D) in GPT-2 (some configs also divide by layer + 1)
    # Pre-norm residual block: each sub-layer reads a normalised copy and adds its result back.
    x = x + multi_head_attention(layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps),
                                 w, p + "attn.", config.n_head, scale)
    x = x + feed_forward(layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps), w, p + "mlp.")
    return x


def hidden_states(ids, weights, config: GPT2Config):  # [T] ids -> [T, C]
    """The final hidden states (after ``ln_f``) of a 1-D sequence of token ids."""
    return _forward(ids, _as_float64(weights), config)


def logits(ids, weights, config: GPT2Config):  # [T] ids -> [T, V]
    """Next-token logits at every position: the hidden states times the (tied) token embedding matrix."""
    w = _as_float64(weights)
    return _forward(ids, w, config) @ w["lm_head.weight"].T  # [T, C] @ [C, V]


def _forward(ids, w, config):  # [T] ids -> [T, C]
    ids = np.asarray(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][np.arange(len(ids))]  # token + position embeddings, [T, C]
    for layer in range(config.n_layer):
        x = block(x, w, layer, config)
    return layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], config.layer_norm_epsilon)


def _as_float64(weights):
    return {name: np.asarray(array, dtype=np.float64) for name, array in weights.items()}
