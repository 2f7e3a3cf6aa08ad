"""A plain numpy forward pass of our two architectures: the model itself,
as its definition says, with no engine's rounding in it.

Why: llama.cpp and frugal both quantize every matmul input to 8 bits,
and that rounding turns any float difference into logit noise, so two
such engines cannot agree on top-1 much better than either agrees with
the unquantized model. This reference measures that directly: weights
are dequantized by the gguf package (ggml's own Python reader, not our
code), activations stay in float32, and norms and softmax are computed
in float64. The conformance tests then check that frugal is as close to
this model as llama.cpp is.

Hyperparameters come from the file's metadata. The constants below are
the architectures' own definitions, as in src/arch_*.c.
"""
import numpy as np
import gguf

GEMMA3_SWA_PATTERN = 6          # every 6th layer is global
GEMMA3_LOCAL_ROPE_BASE = 10000.0


def _rmsnorm(x, w, eps):
    x64 = x.astype(np.float64)
    return (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps) * w).astype(np.float32)


def _rope(x, pos, base, neox):
    """Rotate [T, heads, D] by position: NEOX rotates the two halves,
    the GGUF llama layout adjacent pairs."""
    d = x.shape[-1]
    ang = pos[:, None] * base ** (-np.arange(0, d, 2, dtype=np.float64) / d)[None, :]
    c = np.cos(ang)[:, None, :].astype(np.float32)
    s = np.sin(ang)[:, None, :].astype(np.float32)
    a, b = (x[..., :d // 2], x[..., d // 2:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * c - b * s, a * s + b * c
    if neox:
        return np.concatenate([ra, rb], axis=-1)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def _attention(q, k, v, scale, mask):
    """Causal softmax attention, grouped-query: [T, H, D] queries over [T, KV, D]."""
    T, nh, hd = q.shape
    group = nh // k.shape[1]
    out = np.empty_like(q)
    for h in range(nh):
        s = (q[:, h] @ k[:, h // group].T).astype(np.float64) * scale + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h] = p.astype(np.float32) @ v[:, h // group]
    return out


class ReferenceModel:
    def __init__(self, path):
        r = gguf.GGUFReader(str(path))
        self.arch = r.fields["general.architecture"].contents()
        if self.arch not in ("llama", "gemma3"):
            raise ValueError(f"no reference for architecture {self.arch}")
        meta = {k: f.contents() for k, f in r.fields.items() if k.startswith(self.arch + ".")}
        hp = lambda key, default=None: meta.get(f"{self.arch}.{key}", default)
        self.n_layer, self.n_embd = hp("block_count"), hp("embedding_length")
        self.n_head, self.n_kv = hp("attention.head_count"), hp("attention.head_count_kv")
        self.head_dim = hp("attention.key_length", self.n_embd // self.n_head)
        self.eps = hp("attention.layer_norm_rms_epsilon")
        self.rope_base = hp("rope.freq_base", 10000.0)
        self.window = hp("attention.sliding_window", 0)
        self.w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in r.tensors}
        self.output = self.w.get("output.weight", self.w["token_embd.weight"])

    def logits(self, tokens, first=0):
        """Logits of positions first..len(tokens)-1 of one causal window."""
        tokens = np.asarray(tokens, dtype=np.int64)
        T, gemma = len(tokens), self.arch == "gemma3"
        x = self.w["token_embd.weight"][tokens]
        if gemma:
            x = x * np.float32(np.sqrt(self.n_embd))
        pos = np.arange(T, dtype=np.float64)
        dist = pos[:, None] - pos[None, :]
        for i in range(self.n_layer):
            local = gemma and (i + 1) % GEMMA3_SWA_PATTERN != 0
            mask = np.where((dist < 0) | (local & (dist >= self.window)), -np.inf, 0.0)
            base = GEMMA3_LOCAL_ROPE_BASE if local else self.rope_base
            x = self._block(i, x, pos, mask, base, gemma)
        h = _rmsnorm(x[first:], self.w["output_norm.weight"], self.eps)
        return h @ self.output.T

    def _block(self, i, x, pos, mask, base, gemma):
        w = lambda name: self.w[f"blk.{i}.{name}.weight"]
        T, hd = len(x), self.head_dim
        h = _rmsnorm(x, w("attn_norm"), self.eps)
        q = (h @ w("attn_q").T).reshape(T, self.n_head, hd)
        k = (h @ w("attn_k").T).reshape(T, self.n_kv, hd)
        v = (h @ w("attn_v").T).reshape(T, self.n_kv, hd)
        if gemma:  # QK-norm
            q, k = _rmsnorm(q, w("attn_q_norm"), self.eps), _rmsnorm(k, w("attn_k_norm"), self.eps)
        q, k = _rope(q, pos, base, neox=gemma), _rope(k, pos, base, neox=gemma)
        a = _attention(q, k, v, 1.0 / np.sqrt(hd), mask).reshape(T, self.n_head * hd) @ w("attn_output").T
        x = x + (_rmsnorm(a, w("post_attention_norm"), self.eps) if gemma else a)
        h = _rmsnorm(x, w("ffn_norm"), self.eps)
        g, u = h @ w("ffn_gate").T, h @ w("ffn_up").T
        if gemma:  # GELU, tanh approximation
            act = 0.5 * g * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (g + np.float32(0.044715) * g * g * g)))
        else:  # SiLU
            act = g / (1 + np.exp(-g))
        f = (act * u) @ w("ffn_down").T
        return x + (_rmsnorm(f, w("post_ffw_norm"), self.eps) if gemma else f)
