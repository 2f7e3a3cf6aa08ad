"""cases.py - the hand-made malformed GGUF files: each one breaks exactly one
thing in an otherwise valid file, and names the check that must refuse it
and the words the error message must contain.

CASES is a list of Case(name, status, message, check, build): `build()`
returns the file's bytes; `status` is the status text the CLI prints
("malformed model file" or "unsupported"); `message` a substring of the
one-line error; `check` the place in the code that refuses it (for the
table in docs/fuzzing.md, printed by `make.py --markdown`).

Used by tests/malformed/make.py (writes the files), test_malformed.py
(runs frugal on them) and fuzz/make-corpus (seeds for fuzz_gguf).
"""
import math
import os
import struct
import sys
from collections import namedtuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz"))
import ggufgen as G  # noqa: E402

Case = namedtuple("Case", "name status message check build")
FORMAT, UNSUPPORTED = "malformed model file", "unsupported"
CASES = []


def case(name, status, message, check):
    def register(fn):
        CASES.append(Case(name, status, message, check, fn))
        return fn
    return register


def micro():
    return G.micro_llama()


def header(version=3, n_tensors=0, n_kv=0, magic=b"GGUF"):
    return magic + struct.pack("<IQQ", version, n_tensors, n_kv)


def with_raw_kv(raw):
    """A valid model with one broken key/value pair appended to its metadata."""
    return micro().raw_kv(raw).to_bytes()


def key(name, vtype):
    return G.enc_str(name) + struct.pack("<I", vtype)


def one_tensor(name="w", ttype=G.T_F32, shape=(4, 2), offset=0, data=True, n_dims=None):
    """A file with no metadata and one tensor info written verbatim."""
    g = G.Gguf()
    dims = list(shape)
    info = G.enc_str(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
    info += b"".join(struct.pack("<q", d) for d in dims) + struct.pack("<IQ", ttype, offset)
    g.raw_tensor_info(info)
    out = g.to_bytes()
    if data:
        out += b"\0" * ((-len(out)) % 32) + b"\0" * 64
    return out


def edit(fn):
    """micro() changed by fn, as bytes."""
    g = micro()
    fn(g)
    return g.to_bytes()


# ---- header -----------------------------------------------------------------

@case("empty_file", FORMAT, "file truncated: magic needs 4 bytes", "gguf.c read_header: take()")
def _():
    return b""


@case("header_truncated", FORMAT, "file truncated: tensor count needs 8 bytes",
      "gguf.c read_header: rd_u64")
def _():
    return b"GGUF" + struct.pack("<I", 3) + b"\1\0\0"


@case("bad_magic", FORMAT, "not a GGUF file", "gguf.c read_header: magic")
def _():
    return header(magic=b"GGML")


@case("version_1", UNSUPPORTED, "version 1 unsupported", "gguf.c read_header: version")
def _():
    return header(version=1)


@case("big_endian", UNSUPPORTED, "big-endian GGUF files are unsupported",
      "gguf.c read_header: byte-swapped version")
def _():
    return b"GGUF" + struct.pack(">IQQ", 3, 0, 0)


@case("unknown_version", FORMAT, "unknown version 4", "gguf.c read_header: version")
def _():
    return header(version=4)


@case("tensor_count_huge", FORMAT, "tensor count 1048576 is over the limit",
      "gguf.c read_header: GGUF_MAX_TENSORS")
def _():
    return header(n_tensors=1 << 20)


@case("kv_count_huge", FORMAT, "key/value count 1099511627776 is over the limit",
      "gguf.c read_header: GGUF_MAX_KV")
def _():
    return header(n_kv=1 << 40)


# ---- keys and values --------------------------------------------------------------

@case("kv_count_past_end", FORMAT, "key #1: file truncated: key length needs 8 bytes",
      "gguf.c rd_str via read_kv: more keys announced than present")
def _():
    g = G.Gguf().add("general.name", G.STRING, "x")
    g.n_kv = 2
    return g.to_bytes()


@case("key_length_past_eof", FORMAT, "key length 1000 runs past the end of the file",
      "gguf.c rd_str: length vs bytes left")
def _():
    return header(n_kv=1) + struct.pack("<Q", 1000) + b"abc"


@case("key_length_huge", FORMAT, "key length 1099511627776 is over the limit",
      "gguf.c rd_str: GGUF_MAX_STRING")
def _():
    return header(n_kv=1) + struct.pack("<Q", 1 << 40)


@case("empty_key", FORMAT, "empty key", "gguf.c read_kv")
def _():
    return with_raw_kv(key("", G.U32) + struct.pack("<I", 1))


@case("unknown_value_type", FORMAT, "unknown value type 13", "gguf.c read_kv: type id")
def _():
    return with_raw_kv(key("x.y", 13) + struct.pack("<I", 1))


@case("bad_bool", FORMAT, "bool value 2 is not 0 or 1", "gguf.c read_scalar")
def _():
    return with_raw_kv(key("x.flag", G.BOOL) + b"\2")


@case("string_past_eof", FORMAT, "string length 1000000 runs past the end of the file",
      "gguf.c rd_str: length vs bytes left")
def _():
    return header(n_kv=1) + key("general.name", G.STRING) + struct.pack("<Q", 10**6) + b"abc"


@case("string_length_huge", FORMAT, "string length 2147483648 is over the limit",
      "gguf.c rd_str: GGUF_MAX_STRING")
def _():
    return header(n_kv=1) + key("general.name", G.STRING) + struct.pack("<Q", 1 << 31)


@case("array_count_overflow", FORMAT, "array count 4611686018427387904 is over the limit",
      "gguf.c read_array: GGUF_MAX_ARRAY (count * 8 would overflow 64 bits)")
def _():
    return with_raw_kv(key("x.arr", G.ARRAY) + struct.pack("<IQ", G.U64, 1 << 62))


@case("array_past_eof", FORMAT, "array of 536870912 u64 runs past the end of the file",
      "gguf.c read_array: count vs bytes left, by division")
def _():
    return with_raw_kv(key("x.arr", G.ARRAY) + struct.pack("<IQ", G.U64, 1 << 29))


@case("nested_array", UNSUPPORTED, "nested arrays are unsupported", "gguf.c read_array")
def _():
    return with_raw_kv(key("x.arr", G.ARRAY) + struct.pack("<IQ", G.ARRAY, 1))


@case("unknown_array_type", FORMAT, "unknown array element type 42", "gguf.c read_array")
def _():
    return with_raw_kv(key("x.arr", G.ARRAY) + struct.pack("<IQ", 42, 1))


@case("string_array_past_eof", FORMAT, "array of 1048576 strings runs past the end of the file",
      "gguf.c read_string_array: count vs bytes left / 8, before allocating")
def _():
    return with_raw_kv(key("x.strs", G.ARRAY) + struct.pack("<IQ", G.STRING, 1 << 20))


@case("string_array_element_past_eof", FORMAT, "element 1: string length 500 runs past",
      "gguf.c read_string_array -> rd_str")
def _():
    return (header(n_kv=1) + key("x.strs", G.ARRAY) + struct.pack("<IQ", G.STRING, 2)
            + G.enc_str("a") + struct.pack("<Q", 500) + b"xyz")


@case("bool_array_bad", FORMAT, "bool array element 1 is 7, not 0 or 1", "gguf.c read_array")
def _():
    return with_raw_kv(key("x.bools", G.ARRAY) + struct.pack("<IQ", G.BOOL, 2) + b"\1\7")


@case("duplicate_key", FORMAT, "key general.name: duplicate key", "gguf.c check_unique_keys")
def _():
    return edit(lambda g: g.add("general.name", G.STRING, "again"))


@case("alignment_zero", FORMAT, "alignment 0 is not a power of two", "gguf.c read_alignment")
def _():
    return edit(lambda g: g.add("general.alignment", G.U32, 0))


@case("alignment_not_power_of_two", FORMAT, "alignment 48 is not a power of two",
      "gguf.c read_alignment")
def _():
    return edit(lambda g: g.add("general.alignment", G.U32, 48))


@case("alignment_wrong_type", FORMAT, "alignment must be a u32, found u64", "gguf.c read_alignment")
def _():
    return edit(lambda g: g.add("general.alignment", G.U64, 32))


# ---- tensor infos -------------------------------------------------------------------

@case("n_dims_zero", FORMAT, "0 dimensions (must be 1 to 4)", "gguf.c read_dims")
def _():
    return one_tensor(shape=(), n_dims=0)


@case("n_dims_five", FORMAT, "5 dimensions (must be 1 to 4)", "gguf.c read_dims: GGUF_MAX_DIMS")
def _():
    return one_tensor(shape=(4, 1, 1, 1, 1))


@case("dim_zero", FORMAT, "ne[1] = 0 (must be positive)", "gguf.c read_dims")
def _():
    return one_tensor(shape=(4, 0))


@case("dim_negative", FORMAT, "ne[0] = -32 (must be positive)", "gguf.c read_dims")
def _():
    return one_tensor(shape=(-32, 2))


@case("dims_product_overflow", FORMAT, "element count overflows", "gguf.c read_dims: int64 product")
def _():
    return one_tensor(shape=(1 << 32, 1 << 32))


@case("row_size_overflow", FORMAT, "row size overflows 64 bits", "gguf.c size_tensor")
def _():
    return one_tensor(shape=(1 << 62,))


@case("byte_size_overflow", FORMAT, "byte size overflows 64 bits", "gguf.c size_tensor")
def _():
    return one_tensor(shape=(1 << 61, 2))


@case("unknown_tensor_type", FORMAT, "unknown tensor type 99", "gguf.c size_tensor: fr_traits")
def _():
    return one_tensor(ttype=99)


@case("row_not_block_multiple", FORMAT, "row length 33 is not a multiple of the Q8_0 block size 32",
      "gguf.c size_tensor")
def _():
    return one_tensor(ttype=G.T_Q8_0, shape=(33, 2))


@case("offset_misaligned", FORMAT, "data offset 8 is not a multiple of the alignment 32",
      "gguf.c read_tensor_info")
def _():
    return one_tensor(offset=8)


@case("offset_out_of_range", FORMAT, "data offset 1099511627776 is past the end of the file",
      "gguf.c place_tensors")
def _():
    return one_tensor(offset=1 << 40)


@case("data_past_eof", FORMAT, "runs past the end of the file", "gguf.c place_tensors")
def _():
    return one_tensor(shape=(1024, 2))


@case("file_truncated_in_data", FORMAT, "tensor blk.0.ffn_down.weight: data",
      "gguf.c place_tensors (the last tensor's data cut short)")
def _():
    return micro().to_bytes()[:-100]


@case("overlapping_tensors", FORMAT, "overlaps tensor", "gguf.c check_tensor_layout")
def _():
    def f(g):
        g.tensor("blk.0.ffn_up.weight").offset = 0   # on top of token_embd.weight
    return edit(f)


@case("duplicate_tensor_name", FORMAT, "duplicate tensor name", "gguf.c check_tensor_layout")
def _():
    return edit(lambda g: setattr(g.tensor("blk.0.ffn_up.weight"), "name", "blk.0.ffn_gate.weight"))


@case("empty_tensor_name", FORMAT, "empty tensor name", "gguf.c read_tensor_info")
def _():
    return one_tensor(name="")


@case("tensor_name_too_long", FORMAT, "tensor name is 64 bytes, the limit is 63",
      "gguf.c read_tensor_info: GGUF_MAX_NAME")
def _():
    return one_tensor(name="x" * 64)


@case("tensor_name_past_eof", FORMAT, "tensor name length 4096 runs past the end",
      "gguf.c rd_str")
def _():
    return header(n_tensors=1) + struct.pack("<Q", 4096) + b"blk"


@case("tensor_count_past_end", FORMAT, "tensor #1: file truncated: tensor name length needs 8 bytes",
      "gguf.c read_tensor_info: more tensors announced than present")
def _():
    return (header(n_tensors=2) + G.Tensor("w", G.T_F32, [4, 2], b"").info(0))


# ---- model metadata ----------------------------------------------------------------

@case("missing_architecture", FORMAT, "missing key general.architecture", "model.c frugal_model_load")
def _():
    return edit(lambda g: g.drop("general.architecture"))


@case("architecture_wrong_type", FORMAT, "key general.architecture: expected a string, found u32",
      "model.c frugal_model_load (dup_str_key)")
def _():
    return edit(lambda g: g.set("general.architecture", G.U32, 7))


@case("unsupported_architecture", UNSUPPORTED, "architecture 'gpt-neox' is not supported",
      "model.c load_arch")
def _():
    return edit(lambda g: g.set("general.architecture", G.STRING, "gpt-neox"))


@case("missing_block_count", FORMAT, "missing key llama.block_count",
      "model.c fr_hp_u32 (fr_read_common_hparams)")
def _():
    return edit(lambda g: g.drop("llama.block_count"))


@case("block_count_wrong_type", FORMAT, "key llama.block_count: expected an integer, found string",
      "gguf.c get_int via fr_hp_u32")
def _():
    return edit(lambda g: g.set("llama.block_count", G.STRING, "one"))


@case("block_count_zero", FORMAT, "key llama.block_count: value 0 out of range", "model.c fr_hp_u32")
def _():
    return edit(lambda g: g.set("llama.block_count", G.U32, 0))


@case("block_count_huge", FORMAT, "value 1073741824 out of range 1..16777216", "model.c fr_hp_u32")
def _():
    return edit(lambda g: g.set("llama.block_count", G.U32, 1 << 30))


@case("block_count_negative", FORMAT, "key llama.block_count: value -1 does not fit in u32",
      "gguf.c get_int")
def _():
    return edit(lambda g: g.set("llama.block_count", G.I32, -1))


@case("block_count_above_tensors", FORMAT, "missing tensor blk.1.attn_norm.weight",
      "model.c fr_bind (fr_bind_block)")
def _():
    return edit(lambda g: g.set("llama.block_count", G.U32, 3))


@case("missing_context_length", FORMAT, "missing key llama.context_length", "model.c fr_hp_u32")
def _():
    return edit(lambda g: g.drop("llama.context_length"))


@case("embedding_length_mismatch", FORMAT,
      "tensor token_embd.weight has shape [32, 262], expected [48, 262]", "model.c fr_bind")
def _():
    return edit(lambda g: g.set("llama.embedding_length", G.U32, 48))


@case("rope_base_negative", FORMAT, "key llama.rope.freq_base: value -1 must be positive",
      "model.c fr_hp_f32")
def _():
    return edit(lambda g: g.set("llama.rope.freq_base", G.F32, -1.0))


@case("rope_base_nan", FORMAT, "key llama.rope.freq_base: value nan must be positive",
      "model.c fr_hp_f32")
def _():
    return edit(lambda g: g.set("llama.rope.freq_base", G.F32, math.nan))


@case("norm_eps_wrong_type", FORMAT, "expected a float, found string", "gguf.c gguf_get_f32")
def _():
    return edit(lambda g: g.set("llama.attention.layer_norm_rms_epsilon", G.STRING, "1e-5"))


@case("head_count_kv_not_divisor", FORMAT, "head_count 4 is not a multiple of head_count_kv 3",
      "model.c fr_check_hparams")
def _():
    return G.tiny_llama(n_layer=1, n_head=4, n_head_kv=3, n_merges=0).to_bytes()


@case("head_size_unsupported", UNSUPPORTED, "head size 1 (supported: even, up to 512)",
      "model.c fr_check_hparams")
def _():
    return G.tiny_llama(n_layer=1, n_head=64, n_head_kv=64, n_merges=0).to_bytes()


@case("rope_dim_too_large", FORMAT, "rope dimension 17 invalid for head size 16",
      "model.c fr_check_hparams")
def _():
    return edit(lambda g: g.set("llama.rope.dimension_count", G.U32, 17))


@case("gemma3_key_value_length", UNSUPPORTED, "key length 16 != value length 8", "arch_gemma3.c")
def _():
    g = G.tiny_gemma3(n_layer=1)
    g.set("gemma3.attention.value_length", G.U32, 8)
    return g.to_bytes()


# ---- tokenizer ---------------------------------------------------------------------

@case("missing_tokenizer_model", FORMAT, "key tokenizer.ggml.model: not found",
      "tokenizer.c fr_tokenizer_load")
def _():
    return edit(lambda g: g.drop("tokenizer.ggml.model"))


@case("unsupported_tokenizer_model", UNSUPPORTED, "tokenizer model 'bert' is not supported",
      "tokenizer.c fr_tokenizer_load")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.model", G.STRING, "bert"))


@case("tokens_wrong_type", FORMAT,
      "key tokenizer.ggml.tokens: expected an array of string, found an array of i32",
      "gguf.c gguf_get_arr (read_arrays)")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.tokens", G.ARRAY, (G.I32, [1, 2, 3])))


@case("tokens_empty", FORMAT, "tokenizer: 262 token types for 0 tokens",
      "tokenizer.c optional_per_token (types vs tokens)")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, [])))


@case("vocabulary_empty", FORMAT, "tokenizer: vocabulary of 0 tokens", "tokenizer.c read_arrays")
def _():
    def f(g):
        g.set("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, []))
        g.drop("tokenizer.ggml.token_type")
    return edit(f)


@case("token_type_count_mismatch", FORMAT, "tokenizer: 261 token types for 262 tokens",
      "tokenizer.c optional_per_token")
def _():
    def f(g):
        types = g.get("tokenizer.ggml.token_type")[2][1]
        g.set("tokenizer.ggml.token_type", G.ARRAY, (G.I32, types[:-1]))
    return edit(f)


@case("token_type_unknown", FORMAT, "tokenizer: token 5 has unknown type 9", "tokenizer.c copy_vocab")
def _():
    def f(g):
        types = list(g.get("tokenizer.ggml.token_type")[2][1])
        types[5] = 9
        g.set("tokenizer.ggml.token_type", G.ARRAY, (G.I32, types))
    return edit(f)


@case("bos_id_out_of_range", FORMAT, "BOS token id 5000 is outside the vocabulary",
      "tokenizer.c check_spec")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.bos_token_id", G.U32, 5000))


@case("eos_id_negative", FORMAT, "EOS token id -7 is outside the vocabulary", "tokenizer.c check_spec")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.eos_token_id", G.I32, -7))


@case("missing_merges", FORMAT, "key tokenizer.ggml.merges: not found", "tokenizer.c read_arrays")
def _():
    return edit(lambda g: g.drop("tokenizer.ggml.merges"))


@case("merge_malformed", FORMAT, "merge 0 (\"abc\") is not two tokens separated by a space",
      "tokenizer.c index_merges")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.merges", G.ARRAY, (G.STRING, ["abc"])))


@case("add_bos_wrong_type", FORMAT, "key tokenizer.ggml.add_bos_token: expected a bool, found u8",
      "tokenizer.c read_flags")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.add_bos_token", G.U8, 1))


@case("pre_wrong_type", FORMAT, "key tokenizer.ggml.pre: expected a string, found u32",
      "tokenizer.c fr_tokenizer_load")
def _():
    return edit(lambda g: g.set("tokenizer.ggml.pre", G.U32, 1))


@case("scores_count_mismatch", FORMAT, "scores for 288 tokens", "tokenizer.c optional_per_token")
def _():
    g = G.tiny_gemma3(n_layer=1)
    scores = g.get("tokenizer.ggml.scores")[2][1]
    g.set("tokenizer.ggml.scores", G.ARRAY, (G.F32, scores[:10]))
    return g.to_bytes()


@case("vocab_size_mismatch_embedding", FORMAT,
      "tensor token_embd.weight has shape [32, 262], expected [32, 263]",
      "model.c fr_bind_common (n_vocab from the tokenizer)")
def _():
    def f(g):
        toks = g.get("tokenizer.ggml.tokens")[2][1]
        types = g.get("tokenizer.ggml.token_type")[2][1]
        g.set("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, toks + ["extra"]))
        g.set("tokenizer.ggml.token_type", G.ARRAY, (G.I32, types + [1]))
    return edit(f)


@case("chat_template_wrong_type", FORMAT, "key tokenizer.chat_template: expected a string, found u32",
      "model.c load_chat_template")
def _():
    return edit(lambda g: g.set("tokenizer.chat_template", G.U32, 1))


# ---- weights ------------------------------------------------------------------------

@case("missing_tensor", FORMAT, "missing tensor blk.0.ffn_down.weight", "model.c fr_bind")
def _():
    return edit(lambda g: g.drop_tensor("blk.0.ffn_down.weight"))


@case("missing_token_embd", FORMAT, "missing tensor token_embd.weight", "model.c fr_bind_common")
def _():
    return edit(lambda g: g.drop_tensor("token_embd.weight"))


@case("tensor_shape_mismatch", FORMAT,
      "tensor blk.0.attn_q.weight has shape [32, 16], expected [32, 32]", "model.c fr_bind")
def _():
    def f(g):
        t = g.tensor("blk.0.attn_q.weight")
        t.shape = [32, 16]
        t.data = t.data[:len(t.data) // 2]
    return edit(f)


@case("tensor_3d", FORMAT, "tensor blk.0.attn_k.weight has shape [32, 2]", "model.c fr_bind (ne[2] != 1)")
def _():
    def f(g):
        g.tensor("blk.0.attn_k.weight").shape = [32, 2, 8]
    return edit(f)


@case("tensor_type_unsupported", UNSUPPORTED, "tensor blk.0.attn_q.weight has type I32",
      "model.c fr_bind: no dequantizer")
def _():
    def f(g):
        t = g.tensor("blk.0.attn_q.weight")
        t.type, t.data = 26, b"\0" * (32 * 32 * 4)
    return edit(f)


@case("norm_not_f32", UNSUPPORTED, "tensor blk.0.attn_norm.weight: vectors must be F32, found Q8_0",
      "model.c fr_bind")
def _():
    def f(g):
        t = g.tensor("blk.0.attn_norm.weight")
        t.type, t.data = G.T_Q8_0, G.quantize(G.T_Q8_0, [1.0] * 32)
    return edit(f)


@case("misaligned_f32_tensor", FORMAT,
      "tensor output_norm.weight: F32 data at file offset", "model.c fr_bind: float data alignment")
def _():
    # general.alignment 1 is legal GGUF; a 1-3 byte I8 tensor in front then
    # leaves output_norm.weight's floats at an address that is not 4-aligned
    for pad in (1, 2, 3):
        g = micro()
        g.alignment = 1
        g.add("general.alignment", G.U32, 1)
        g.tensors.insert(0, G.Tensor("pad", 24, [pad], bytes(pad)))
        out = g.to_bytes()
        data_start = len(out) - sum(len(t.data) for t in g.tensors)
        if (data_start + pad + len(g.tensor("token_embd.weight").data)) % 4:
            return out
    raise AssertionError("no padding misaligns output_norm.weight")


def valid_models():
    """Valid files the same tests expect to load (a control)."""
    return {"micro_llama": G.micro_llama().to_bytes(),
            "tiny_llama": G.tiny_llama().to_bytes(),
            "tiny_gemma3": G.tiny_gemma3().to_bytes()}
