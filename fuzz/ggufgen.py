"""ggufgen.py - a small GGUF writer (pure Python, no numpy) for seed corpora
and malformed-file tests, and the tiny models built with it.

A GGUF file is built from three lists that tests may edit before writing:

    g = tiny_llama()            # a Gguf: .kv, .tensors, header fields
    g.set("llama.block_count", U32, 3)
    g.drop("tokenizer.ggml.model")
    data = g.to_bytes()

Entries of g.kv are (key, type, value); a value of type ARRAY is
(element type, [elements]). Entries of g.tensors are Tensor objects whose
shape, type, name and data can be changed freely; `offset` = None places
the tensor at the next aligned offset. For deliberately broken files
Gguf.raw_kv / raw_tensor_info append verbatim bytes, and the header fields
(magic, version, n_kv, n_tensors) override what is written.

The tiny models are real enough for the whole load and forward pass: a
byte-level BPE ("gpt2") or SentencePiece ("llama") vocabulary, llama or
gemma3 hyperparameters, and Q8_0 / Q4_1 / F32 weights drawn from a seeded
RNG, so every run writes the same bytes.
"""
import random
import struct

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}

# tensor types (ggml ids)
T_F32, T_F16, T_Q4_0, T_Q4_1, T_Q8_0, T_IQ2_XXS = 0, 1, 2, 3, 8, 16
BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_Q4_0: (32, 18), T_Q4_1: (32, 20), T_Q8_0: (32, 34),
         T_IQ2_XXS: (256, 66)}

# token types
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


def enc_str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def enc_value(vtype, value):
    if vtype == STRING:
        return enc_str(value)
    if vtype == ARRAY:
        etype, elems = value
        out = struct.pack("<IQ", etype, len(elems))
        return out + b"".join(enc_value(etype, e) for e in elems)
    return struct.pack(SCALAR_FMT[vtype], value)


class Tensor:
    def __init__(self, name, ttype, shape, data, offset=None):
        self.name, self.type, self.shape, self.data, self.offset = name, ttype, list(shape), data, offset

    def info(self, offset):
        out = enc_str(self.name) + struct.pack("<I", len(self.shape))
        out += b"".join(struct.pack("<q", d) for d in self.shape)
        return out + struct.pack("<IQ", self.type, offset)


class Gguf:
    def __init__(self, version=3, alignment=32):
        self.magic, self.version, self.alignment = b"GGUF", version, alignment
        self.kv = []             # (key, type, value) or ("raw", bytes)
        self.tensors = []        # Tensor or ("raw", bytes)
        self.n_kv = self.n_tensors = None   # header overrides
        self.tail = b""          # bytes appended after everything
        self.truncate = None     # cut the file to this many bytes

    # ---- key/value pairs ----
    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))
        return self

    def set(self, key, vtype, value):
        """Replaces the key's type and value in place (appends if absent)."""
        for i, e in enumerate(self.kv):
            if e[0] == key:
                self.kv[i] = (key, vtype, value)
                return self
        return self.add(key, vtype, value)

    def get(self, key):
        for e in self.kv:
            if e[0] == key:
                return e
        raise KeyError(key)

    def drop(self, key):
        self.kv = [e for e in self.kv if e[0] != key]
        return self

    def raw_kv(self, data):
        self.kv.append(("raw", data))
        return self

    # ---- tensors ----
    def tensor(self, name):
        for t in self.tensors:
            if isinstance(t, Tensor) and t.name == name:
                return t
        raise KeyError(name)

    def drop_tensor(self, name):
        self.tensors = [t for t in self.tensors if not (isinstance(t, Tensor) and t.name == name)]
        return self

    def raw_tensor_info(self, data):
        self.tensors.append(("raw", data))
        return self

    # ---- output ----
    def to_bytes(self):
        a = self.alignment
        kv = b""
        for e in self.kv:
            kv += e[1] if e[0] == "raw" else enc_str(e[0]) + struct.pack("<I", e[1]) + enc_value(e[1], e[2])
        # lay out the data section
        data, offsets = b"", []
        for t in self.tensors:
            if not isinstance(t, Tensor):
                offsets.append(None)
                continue
            if t.offset is None:
                data += b"\0" * ((-len(data)) % a)
                offsets.append(len(data))
                data += t.data
            else:
                offsets.append(t.offset)
        infos = b"".join(t.info(o) if isinstance(t, Tensor) else t[1]
                         for t, o in zip(self.tensors, offsets))
        n_kv = len(self.kv) if self.n_kv is None else self.n_kv
        n_t = len(self.tensors) if self.n_tensors is None else self.n_tensors
        out = self.magic + struct.pack("<IQQ", self.version, n_t, n_kv) + kv + infos
        if data:
            out += b"\0" * ((-len(out)) % a) + data
        out += self.tail
        return out if self.truncate is None else out[:self.truncate]


# ---- quantization (bit-exact with ggml's layouts) ----------------------------

def f16(x):
    return struct.pack("<e", x)


def quant_q8_0(xs):
    out = bytearray()
    for b in range(0, len(xs), 32):
        blk = xs[b:b + 32]
        amax = max(abs(v) for v in blk)
        d = amax / 127.0
        inv = 1.0 / d if d else 0.0
        out += f16(d) + struct.pack("<32b", *[max(-127, min(127, round(v * inv))) for v in blk])
    return bytes(out)


def quant_q4_1(xs):
    out = bytearray()
    for b in range(0, len(xs), 32):
        blk = xs[b:b + 32]
        lo, hi = min(blk), max(blk)
        d = (hi - lo) / 15.0
        inv = 1.0 / d if d else 0.0
        q = [max(0, min(15, round((v - lo) * inv))) for v in blk]
        out += f16(d) + f16(lo) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    return bytes(out)


def quantize(ttype, xs):
    if ttype == T_F32:
        return struct.pack("<%df" % len(xs), *xs)
    if ttype == T_F16:
        return b"".join(f16(v) for v in xs)
    if ttype == T_Q8_0:
        return quant_q8_0(xs)
    if ttype == T_Q4_1:
        return quant_q4_1(xs)
    raise ValueError(ttype)


def nbytes(ttype, shape):
    blck, size = BLOCK[ttype]
    n = 1
    for d in shape:
        n *= d
    return n // blck * size


# ---- vocabularies -------------------------------------------------------------

def byte_char(b):
    """GPT-2's printable stand-in for byte b."""
    if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174:
        return chr(b)
    n = 0
    for x in range(256):
        if not (33 <= x <= 126 or 161 <= x <= 172 or x >= 174):
            if x == b:
                return chr(256 + n)
            n += 1


GPT2_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ a", "e r", "o n", "Ġ Ġ", "l l",
               "r e", "Ġ s", "Ġ w", "o r", "e n", "Ġ h", "Ġh e", "l o", "ll o", "he llo",
               "Ċ Ċ", "ĠĠ ĠĠ", "1 2", "' s", "Ġ 1"]
GPT2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                   "'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named "
                   "SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
                   "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
GEMMA_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<start_of_turn>{{ role }}\n"
                  "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def gpt2_vocab(n_merges=len(GPT2_MERGES)):
    """Specials, the 256 byte characters, one token per merge, a byte token
    and an unused token. Returns (tokens, types, merges)."""
    tokens = list(GPT2_SPECIALS)
    types = [TOK_CONTROL] * len(tokens)
    tokens += [byte_char(b) for b in range(256)]
    types += [TOK_NORMAL] * 256
    merges = GPT2_MERGES[:n_merges]
    for m in merges:
        tokens.append(m.replace(" ", ""))
        types.append(TOK_NORMAL)
    tokens += ["<0x41>", "<unused0>", "<tool>"]
    types += [TOK_BYTE, TOK_UNUSED, TOK_USER]
    return tokens, types, merges


def spm_vocab():
    """A SentencePiece vocabulary: specials, 256 byte tokens, a few pieces.
    Returns (tokens, types, scores)."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    types = [TOK_CONTROL, TOK_CONTROL, TOK_CONTROL, TOK_UNKNOWN, TOK_CONTROL, TOK_CONTROL]
    tokens += ["<0x%02X>" % b for b in range(256)]
    types += [TOK_BYTE] * 256
    pieces = ["▁", "▁t", "he", "▁the", "▁a", "in", "▁in", "er", "▁h", "▁he", "ll", "llo",
              "▁hello", "o", "e", "h", "l", "t", "a", "i", "n", "r", "▁w", "or", "ld", "▁world"]
    tokens += pieces
    types += [TOK_NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, types, scores


# ---- models ---------------------------------------------------------------------

class _Rng:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def weights(self, n, scale):
        return [self.r.gauss(0.0, scale) for _ in range(n)]


def _add_tensor(g, rng, name, ttype, shape, scale=0.1, ones=False):
    n = 1
    for d in shape:
        n *= d
    xs = [1.0 + rng.r.uniform(-0.1, 0.1) for _ in range(n)] if ones else rng.weights(n, scale)
    g.tensors.append(Tensor(name, ttype, shape, quantize(ttype, xs)))


def tiny_llama(n_layer=2, n_embd=64, n_head=4, n_head_kv=4, n_ff=64, n_merges=len(GPT2_MERGES),
               embd_type=T_Q8_0, attn_type=T_Q4_1, ffn_type=T_Q8_0, output=False,
               template=CHATML_TEMPLATE, pre="smollm", seed=1):
    """A llama-architecture model with a byte-level BPE vocabulary."""
    rng = _Rng(seed)
    tokens, types, merges = gpt2_vocab(n_merges)
    g = Gguf()
    g.add("general.architecture", STRING, "llama")
    g.add("general.name", STRING, "tiny-llama")
    g.add("llama.block_count", U32, n_layer)
    g.add("llama.context_length", U32, 256)
    g.add("llama.embedding_length", U32, n_embd)
    g.add("llama.feed_forward_length", U32, n_ff)
    g.add("llama.attention.head_count", U32, n_head)
    g.add("llama.attention.head_count_kv", U32, n_head_kv)
    g.add("llama.rope.freq_base", F32, 10000.0)
    g.add("llama.attention.layer_norm_rms_epsilon", F32, 1e-5)
    g.add("llama.rope.dimension_count", U32, n_embd // n_head)
    g.add("tokenizer.ggml.model", STRING, "gpt2")
    if pre is not None:
        g.add("tokenizer.ggml.pre", STRING, pre)
    g.add("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))
    g.add("tokenizer.ggml.token_type", ARRAY, (I32, types))
    g.add("tokenizer.ggml.merges", ARRAY, (STRING, merges))
    g.add("tokenizer.ggml.bos_token_id", U32, 1)
    g.add("tokenizer.ggml.eos_token_id", U32, 2)
    g.add("tokenizer.ggml.add_bos_token", BOOL, 0)
    if template is not None:
        g.add("tokenizer.chat_template", STRING, template)
    n_vocab, kv = len(tokens), n_embd // n_head * n_head_kv
    _add_tensor(g, rng, "token_embd.weight", embd_type, [n_embd, n_vocab], 0.5)
    _add_tensor(g, rng, "output_norm.weight", T_F32, [n_embd], ones=True)
    if output:
        _add_tensor(g, rng, "output.weight", attn_type, [n_embd, n_vocab])
    for i in range(n_layer):
        p = "blk.%d." % i
        _add_tensor(g, rng, p + "attn_norm.weight", T_F32, [n_embd], ones=True)
        _add_tensor(g, rng, p + "attn_q.weight", attn_type, [n_embd, n_embd])
        _add_tensor(g, rng, p + "attn_k.weight", attn_type, [n_embd, kv])
        _add_tensor(g, rng, p + "attn_v.weight", attn_type, [n_embd, kv])
        _add_tensor(g, rng, p + "attn_output.weight", attn_type, [n_embd, n_embd])
        _add_tensor(g, rng, p + "ffn_norm.weight", T_F32, [n_embd], ones=True)
        _add_tensor(g, rng, p + "ffn_gate.weight", ffn_type, [n_embd, n_ff])
        _add_tensor(g, rng, p + "ffn_up.weight", ffn_type, [n_embd, n_ff])
        _add_tensor(g, rng, p + "ffn_down.weight", ffn_type, [n_ff, n_embd])
    return g


def micro_llama(seed=2):
    """The smallest model that loads: 1 layer, embedding 32, 2 heads, a
    vocabulary of byte characters only (no merges): a seed the fuzzer can
    mutate quickly."""
    g = tiny_llama(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, n_ff=32, n_merges=0,
                   embd_type=T_Q4_1, attn_type=T_Q8_0, ffn_type=T_Q4_1, template=None,
                   pre="gpt2", seed=seed)
    g.set("general.name", STRING, "micro-llama")
    return g


def tiny_gemma3(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=64, seed=3):
    """A gemma3-architecture model with a SentencePiece vocabulary, a
    sliding window and QK-norm."""
    rng = _Rng(seed)
    tokens, types, scores = spm_vocab()
    g = Gguf()
    g.add("general.architecture", STRING, "gemma3")
    g.add("general.name", STRING, "tiny-gemma3")
    g.add("gemma3.block_count", U32, n_layer)
    g.add("gemma3.context_length", U32, 256)
    g.add("gemma3.embedding_length", U32, n_embd)
    g.add("gemma3.feed_forward_length", U32, n_ff)
    g.add("gemma3.attention.head_count", U32, n_head)
    g.add("gemma3.attention.head_count_kv", U32, n_head_kv)
    g.add("gemma3.attention.key_length", U32, head_dim)
    g.add("gemma3.attention.value_length", U32, head_dim)
    g.add("gemma3.attention.sliding_window", U32, 4)
    g.add("gemma3.rope.freq_base", F32, 1000000.0)
    g.add("gemma3.attention.layer_norm_rms_epsilon", F32, 1e-6)
    g.add("tokenizer.ggml.model", STRING, "llama")
    g.add("tokenizer.ggml.pre", STRING, "default")
    g.add("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))
    g.add("tokenizer.ggml.scores", ARRAY, (F32, scores))
    g.add("tokenizer.ggml.token_type", ARRAY, (I32, types))
    g.add("tokenizer.ggml.bos_token_id", U32, 2)
    g.add("tokenizer.ggml.eos_token_id", U32, 1)
    g.add("tokenizer.ggml.unknown_token_id", U32, 3)
    g.add("tokenizer.ggml.add_bos_token", BOOL, 1)
    g.add("tokenizer.ggml.add_space_prefix", BOOL, 0)
    g.add("tokenizer.chat_template", STRING, GEMMA_TEMPLATE)
    n_vocab, q, kv = len(tokens), n_head * head_dim, n_head_kv * head_dim
    _add_tensor(g, rng, "token_embd.weight", T_Q8_0, [n_embd, n_vocab], 0.5)
    _add_tensor(g, rng, "output_norm.weight", T_F32, [n_embd], ones=True)
    for i in range(n_layer):
        p = "blk.%d." % i
        _add_tensor(g, rng, p + "attn_norm.weight", T_F32, [n_embd], ones=True)
        _add_tensor(g, rng, p + "attn_q.weight", T_Q8_0, [n_embd, q])
        _add_tensor(g, rng, p + "attn_k.weight", T_Q4_1, [n_embd, kv])
        _add_tensor(g, rng, p + "attn_v.weight", T_Q4_1, [n_embd, kv])
        _add_tensor(g, rng, p + "attn_output.weight", T_Q8_0, [q, n_embd])
        _add_tensor(g, rng, p + "attn_q_norm.weight", T_F32, [head_dim], ones=True)
        _add_tensor(g, rng, p + "attn_k_norm.weight", T_F32, [head_dim], ones=True)
        _add_tensor(g, rng, p + "post_attention_norm.weight", T_F32, [n_embd], ones=True)
        _add_tensor(g, rng, p + "ffn_norm.weight", T_F32, [n_embd], ones=True)
        _add_tensor(g, rng, p + "ffn_gate.weight", T_Q4_1, [n_embd, n_ff])
        _add_tensor(g, rng, p + "ffn_up.weight", T_Q4_1, [n_embd, n_ff])
        _add_tensor(g, rng, p + "ffn_down.weight", T_Q8_0, [n_ff, n_embd])
        _add_tensor(g, rng, p + "post_ffw_norm.weight", T_F32, [n_embd], ones=True)
    return g


def every_value_type():
    """Metadata of every type and an F16 tensor: not a model, a valid GGUF."""
    g = Gguf()
    g.add("t.u8", U8, 200).add("t.i8", I8, -100).add("t.u16", U16, 60000)
    g.add("t.i16", I16, -30000).add("t.u32", U32, 4000000000).add("t.i32", I32, -2000000000)
    g.add("t.f32", F32, 1.5).add("t.bool", BOOL, 1).add("t.str", STRING, "hello, world")
    g.add("t.u64", U64, 1 << 40).add("t.i64", I64, -5).add("t.f64", F64, 0.25)
    g.add("t.arr_i32", ARRAY, (I32, [-1, 0, 7])).add("t.arr_bool", ARRAY, (BOOL, [1, 0, 1]))
    g.add("t.tokens", ARRAY, (STRING, ["<s>", "hello", "", "wörld"]))
    g.add("general.alignment", U32, 64)
    g.alignment = 64
    g.tensors.append(Tensor("a.f32", T_F32, [8, 2], quantize(T_F32, [0.5] * 16)))
    g.tensors.append(Tensor("c.f16", T_F16, [2, 3, 2], quantize(T_F16, [1.0] * 12)))
    g.tensors.append(Tensor("b.q8", T_Q8_0, [64], quantize(T_Q8_0, [0.1 * i for i in range(64)])))
    return g
