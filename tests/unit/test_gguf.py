"""GGUF loader and ggml dequantizers: bit-exact against the `gguf` package's reference, the real
SmolLM2 file, and corrupt files that must each be a ModelError naming what is wrong."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from ember.errors import EmberError, ModelError
from ember.llm import kquants
from ember.llm.gguf import GGML_TYPE_NAMES, load_gguf, rope_unpermute_rows

gguf = pytest.importorskip("gguf", reason="the gguf package is the reference these tests compare to")
GQT = gguf.GGMLQuantizationType

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_path():
    """ember's default LLM through ember.hub (the wheel's file, the cache's, or fetched)."""
    from ember import hub
    try:
        return hub.resolve("smollm2-135m")
    except EmberError as e:
        pytest.skip(f"SmolLM2-135M GGUF unavailable: {e}")


@pytest.fixture(scope="module")
def smollm2():
    f = load_gguf(_smollm2_path())
    yield f
    f.close()


# ---- the type table -------------------------------------------------------------------------

def test_type_table_matches_ggml():
    for type_id, name in GGML_TYPE_NAMES.items():
        assert GQT(type_id).name == name
    for name, (block, size) in kquants.BLOCK_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[GQT[name]] == (block, size), name


# ---- dequantizers vs gguf.quants ------------------------------------------------------------

# byte offsets of the f16 scale fields in each block: random bytes there could be inf/nan
F16_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def random_blocks(rng, ggml_type, rows, cols):
    """Valid random bytes of a [rows, cols] tensor: random quants, finite random f16 scales."""
    block, size = kquants.BLOCK_TYPES[ggml_type]
    n = rows * cols // block
    if ggml_type == "F16":
        return rng.standard_normal(rows * cols).astype(np.float16).view(np.uint8).reshape(rows, -1)
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for off in F16_FIELDS.get(ggml_type, []):
        half = (rng.standard_normal(n) * rng.choice([1e-4, 1e-2, 1.0, 100.0], n)).astype(np.float16)
        raw[:, off:off + 2] = half.view(np.uint8).reshape(n, 2)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("ggml_type", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"])
def test_dequantize_matches_gguf_reference(rng, ggml_type):
    block = kquants.BLOCK_TYPES[ggml_type][0]
    rows, cols = 7, max(block, 32) * 5
    raw = random_blocks(rng, ggml_type, rows, cols)
    ours = kquants.dequantize(raw, ggml_type, (rows, cols))
    ref = np.asarray(gguf.quants.dequantize(raw, GQT[ggml_type]), dtype=np.float32).reshape(rows, cols)
    assert ours.dtype == np.float32 and ours.shape == (rows, cols)
    if ggml_type == "BF16":      # random bits include NaNs: compare the bits
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    else:
        assert np.isfinite(ours).all()
        assert np.array_equal(ours, ref)


def test_dequantize_chunks_many_blocks(rng, monkeypatch):
    # more blocks than one chunk: the chunk loop must stitch rows back in order
    monkeypatch.setattr(kquants, "_CHUNK_ELEMENTS", 256 * 3)
    raw = random_blocks(rng, "Q6_K", 5, 256 * 7)
    ref = gguf.quants.dequantize(raw, GQT.Q6_K)
    assert np.array_equal(kquants.dequantize(raw, "Q6_K", (5, 256 * 7)), ref)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q4_K"])
def test_q4_blocks_reconstruct_exactly(rng, ggml_type):
    block = kquants.BLOCK_TYPES[ggml_type][0]
    rows, cols = 5, block * 3
    raw = random_blocks(rng, ggml_type, rows, cols)
    codes, scales, offsets = kquants.Q4_BLOCK_CONVERTERS[ggml_type](raw, rows, cols)
    assert codes.shape == (rows, cols // 32, 16) and codes.dtype == np.uint8
    assert scales.shape == offsets.shape == (rows, cols // 32)
    assert scales.dtype == offsets.dtype == np.float32
    want = gguf.quants.dequantize(raw, GQT[ggml_type])
    assert np.array_equal(kquants.q4_blocks_dequantize(codes, scales, offsets), want)


def test_q4_blocks_layout_is_ggml_q4_0(rng):
    # the shared form's codes are byte-for-byte ggml's Q4_0 quants: (j, j + 16) per byte
    raw = random_blocks(rng, "Q4_0", 3, 64)
    codes, _, _ = kquants.q4_0_to_q4_blocks(raw, 3, 64)
    assert np.array_equal(codes.reshape(6, 16), raw.reshape(6, 18)[:, 2:])
    # and a Q4_K sub-block's element j + 16 lands in the high nibble of byte j
    rawk = random_blocks(rng, "Q4_K", 1, 256)
    codes_k, _, _ = kquants.q4_k_to_q4_blocks(rawk, 1, 256)
    qs = rawk[0, 16:144]
    sub1 = qs[0:32] >> 4                      # Q4_K: high nibbles of the first 32 bytes = sub-block 1
    assert np.array_equal(codes_k[0, 1] & 15, sub1[:16])
    assert np.array_equal(codes_k[0, 1] >> 4, sub1[16:])


def test_q8_blocks(rng):
    raw = random_blocks(rng, "Q8_0", 4, 96)
    codes, scales = kquants.q8_0_to_q8_blocks(raw, 4, 96)
    assert codes.dtype == np.int8 and codes.shape == (4, 3, 32) and scales.shape == (4, 3)
    want = gguf.quants.dequantize(raw, GQT.Q8_0)
    assert np.array_equal((codes.astype(np.float32) * scales[:, :, None]).reshape(4, 96), want)


def test_rope_unpermute_inverts_llama_cpp_permute(rng):
    n_head, head_dim, cols = 3, 8, 5
    hf = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
    # convert_hf_to_gguf's LlamaModel.permute
    stored = hf.reshape(n_head, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(hf.shape)
    assert np.array_equal(stored[rope_unpermute_rows(n_head * head_dim, n_head)], hf)
    with pytest.raises(ModelError):
        rope_unpermute_rows(10, 3)


# ---- synthetic files ------------------------------------------------------------------------

def write_gguf(path, rng, alignment=None):
    """A small valid file with every metadata value kind and tensors of several types."""
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("general.name", "tiny ✓")
    w.add_int64("test.i64", -(2 ** 40))
    w.add_float64("test.f64", 0.1)
    w.add_array("test.strings", ["a", "", "héllo", "<|im_end|>"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.floats", [0.5, -1.5])
    tensors = {
        "blk.0.attn_q.weight": ("Q4_K", random_blocks(rng, "Q4_K", 4, 256)),
        "blk.0.attn_k.weight": ("Q8_0", random_blocks(rng, "Q8_0", 2, 64)),
        "blk.0.ffn_down.weight": ("Q4_1", random_blocks(rng, "Q4_1", 3, 32)),
        "blk.0.ffn_up.weight": ("Q6_K", random_blocks(rng, "Q6_K", 1, 256)),
        "blk.0.ffn_gate.weight": ("F16", random_blocks(rng, "F16", 2, 16)),
        "output_norm.weight": ("F32", rng.standard_normal(8).astype(np.float32)),
    }
    for name, (t, data) in tensors.items():
        if t == "F32":
            w.add_tensor(name, data)
        elif t == "F16":
            w.add_tensor(name, data.view(np.float16))
        else:
            w.add_tensor(name, data, raw_dtype=GQT[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.fixture
def tiny(tmp_path, rng):
    path = tmp_path / "model.gguf"
    tensors = write_gguf(path, rng)
    return path, tensors


def test_synthetic_file_matches_gguf_reader(tiny):
    path, tensors = tiny
    ref = gguf.GGUFReader(str(path))
    with load_gguf(path) as f:
        assert f.arch == "llama" and f.version == 3
        assert f.get("llama.block_count") == 2 and isinstance(f.get("llama.block_count"), int)
        assert f.get("tokenizer.ggml.add_bos_token") is True
        assert f.get("general.name") == "tiny ✓"
        assert f.get("test.i64") == -(2 ** 40)
        assert f.get("test.f64") == 0.1
        assert f.get("test.strings") == ["a", "", "héllo", "<|im_end|>"]
        assert f.get("test.ints") == [1, 2, 3]
        assert f.get("test.floats") == [0.5, -1.5]
        assert f.get("missing", 7) == 7
        for key, field in ref.fields.items():
            if not key.startswith("GGUF."):
                assert f.metadata[key] == field.contents(), key
        assert set(f.tensors) == set(tensors)
        for rt in ref.tensors:
            t = f.tensors[rt.name]
            assert t.ggml_type == rt.tensor_type.name
            assert t.shape == tuple(reversed(rt.shape.tolist()))
            assert t.offset == rt.data_offset and t.n_bytes == rt.n_bytes
            assert np.array_equal(t.raw, rt.data.reshape(-1).view(np.uint8))
            want = tensors[rt.name][1]
            want = gguf.quants.dequantize(want.view(np.uint8).reshape(t.shape[0] if len(t.shape) > 1 else 1, -1),
                                          rt.tensor_type).reshape(t.shape)
            assert np.array_equal(f.dequantize(rt.name), want)
        assert f.tensor_bytes_total == sum(rt.n_bytes for rt in ref.tensors)
        q = f.tensor("blk.0.attn_q.weight")
        assert q.shape == (4, 256) and q.rows_raw().shape == (4, 144)
        codes, scales, offsets = f.q4_blocks("blk.0.attn_q.weight")
        assert np.array_equal(kquants.q4_blocks_dequantize(codes, scales, offsets),
                              f.dequantize("blk.0.attn_q.weight"))
        with pytest.raises(ModelError, match="no tensor 'nope'"):
            f.tensor("nope")
        with pytest.raises(ModelError, match="Q8_0"):
            f.q4_blocks("blk.0.attn_k.weight")
    with pytest.raises(EmberError, match="closed"):
        q.raw


def test_metadata_only_file_and_close_with_live_views(tmp_path, tiny):
    # a vocabulary-only file (no tensors) need not be padded to the alignment
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", ["a", "b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    data = path.read_bytes().rstrip(b"\0")
    path.write_bytes(data)
    with load_gguf(path) as f:
        assert f.tensors == {} and f.get("tokenizer.ggml.tokens") == ["a", "b"]
    # close() while a raw view is alive: the view stays valid, new accesses fail
    f = load_gguf(tiny[0])
    view = f.tensors["output_norm.weight"].raw
    before = view.copy()
    f.close()
    assert np.array_equal(view, before) and f.closed
    with pytest.raises(EmberError, match="closed"):
        f.dequantize("output_norm.weight")


def test_custom_alignment(tmp_path, rng):
    path = tmp_path / "a.gguf"
    write_gguf(path, rng, alignment=64)
    with load_gguf(path) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0
        assert all((t.offset - f.data_offset) % 64 == 0 for t in f.tensors.values())


# ---- corrupt files --------------------------------------------------------------------------

def _tensor_info_pos(data: bytes, name: str) -> int:
    """Byte offset of the n_dims field of tensor `name`'s info."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    pos = data.index(needle)
    return pos + len(needle)


def _patched(path, data, pos, fmt, value):
    data = bytearray(data)
    struct.pack_into(fmt, data, pos, value)
    out = path.with_name("bad.gguf")
    out.write_bytes(bytes(data))
    return out


def _load_fails(path, *fragments):
    with pytest.raises(ModelError) as e:
        load_gguf(path)
    msg = str(e.value)
    assert msg.startswith("[gguf] ") and os.path.basename(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_every_truncation_is_a_model_error(tiny):
    path, _ = tiny
    data = path.read_bytes()
    with load_gguf(path) as f:
        end = max(t.offset + t.n_bytes for t in f.tensors.values())
        header_end = f.data_offset
    cuts = list(range(0, header_end + 1)) + list(range(header_end, end, 7))
    out = path.with_name("cut.gguf")
    for cut in cuts:
        out.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            load_gguf(out)
        assert str(e.value).startswith("[gguf] cut.gguf: "), (cut, str(e.value))
    # the exact message for a cut inside the tensor data
    out.write_bytes(data[:end - 1])
    msg = _load_fails(out, "data ends at byte", f"past the file end ({end - 1})")
    assert "tensor '" in msg


def test_tensor_offset_past_end(tiny):
    path, _ = tiny
    data = path.read_bytes()
    pos = _tensor_info_pos(data, "blk.0.attn_k.weight")
    (n_dims,) = struct.unpack_from("<I", data, pos)
    off_pos = pos + 4 + 8 * n_dims + 4
    bad = _patched(path, data, off_pos, "<Q", 1 << 40)
    _load_fails(bad, "tensor 'blk.0.attn_k.weight' data ends at byte", "past the file end")
    bad = _patched(path, data, off_pos, "<Q", 2 ** 64 - 32)
    _load_fails(bad, "tensor 'blk.0.attn_k.weight'")
    bad = _patched(path, data, off_pos, "<Q", 3)
    _load_fails(bad, "not a multiple of the alignment")


def test_overlapping_tensors(tiny):
    path, _ = tiny
    data = path.read_bytes()
    pos = _tensor_info_pos(data, "blk.0.attn_k.weight")
    (n_dims,) = struct.unpack_from("<I", data, pos)
    bad = _patched(path, data, pos + 4 + 8 * n_dims + 4, "<Q", 0)   # on top of attn_q
    _load_fails(bad, "overlap")


@pytest.mark.parametrize("type_id,fragment", [(99, "unknown ggml type 99"), (16, "IQ2_XXS"),
                                              (26, "I32"), (2 ** 32 - 1, "unknown ggml type")])
def test_bad_tensor_type(tiny, type_id, fragment):
    path, _ = tiny
    data = path.read_bytes()
    pos = _tensor_info_pos(data, "output_norm.weight")
    (n_dims,) = struct.unpack_from("<I", data, pos)
    bad = _patched(path, data, pos + 4 + 8 * n_dims, "<I", type_id)
    _load_fails(bad, "tensor 'output_norm.weight'", fragment)


@pytest.mark.parametrize("n_dims", [0, 5, 2 ** 31, 2 ** 32 - 1])
def test_absurd_rank(tiny, n_dims):
    path, _ = tiny
    data = path.read_bytes()
    bad = _patched(path, data, _tensor_info_pos(data, "blk.0.ffn_up.weight"), "<I", n_dims)
    _load_fails(bad, "tensor 'blk.0.ffn_up.weight'", "dims")


@pytest.mark.parametrize("dim,fragment", [(0, "must be positive"), (2 ** 62, "past the file end"),
                                          (2 ** 63 - 256, "past the file end"), (2 ** 64 - 256, "positive int64"),
                                          (100, "not a multiple")])
def test_bad_dims(tiny, dim, fragment):
    path, _ = tiny
    data = path.read_bytes()
    pos = _tensor_info_pos(data, "blk.0.attn_q.weight")   # Q4_K: ne0 must be a multiple of 256
    bad = _patched(path, data, pos + 4, "<Q", dim)
    _load_fails(bad, "tensor 'blk.0.attn_q.weight'", fragment)


@pytest.mark.parametrize("field,value,fragment", [
    (16, 2 ** 63, "metadata key count"), (16, 2 ** 64 - 1, "metadata key count"),
    (8, 2 ** 60, "tensor count"), (16, 100, "[gguf] bad.gguf: "), (8, 1000, "[gguf] bad.gguf: "),
])
def test_huge_counts(tiny, field, value, fragment):
    path, _ = tiny
    bad = _patched(path, path.read_bytes(), field, "<Q", value)
    _load_fails(bad, fragment)


def test_bad_magic_and_version(tiny):
    path, _ = tiny
    data = path.read_bytes()
    _load_fails(_patched(path, data, 0, "<I", 0x46554747 ^ 1), "not a GGUF file")
    _load_fails(_patched(path, data, 4, "<I", 1), "version 1")
    _load_fails(_patched(path, data, 4, "<I", 7), "version 7")
    _load_fails(_patched(path, data, 4, ">I", 3), "big-endian")


def test_bad_strings_and_arrays(tiny):
    path, _ = tiny
    data = path.read_bytes()
    key = b"general.name"
    kpos = data.index(struct.pack("<Q", len(key)) + key)
    _load_fails(_patched(path, data, kpos, "<Q", 2 ** 63), "metadata key #", "past the file end")
    vpos = kpos + 8 + len(key) + 4                 # the value's length field
    _load_fails(_patched(path, data, vpos, "<Q", 2 ** 40), "value of 'general.name'", "past the file end")
    bad = bytearray(data)
    bad[vpos + 8] = 0xFF                           # invalid UTF-8 in the value
    out = path.with_name("bad.gguf")
    out.write_bytes(bytes(bad))
    _load_fails(out, "'general.name'", "UTF-8")
    key = b"test.strings"
    apos = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    _load_fails(_patched(path, data, apos + 4, "<Q", 2 ** 62), "'test.strings'", "cannot fit")
    _load_fails(_patched(path, data, apos, "<I", 9), "'test.strings'", "array of arrays")
    _load_fails(_patched(path, data, apos, "<I", 77), "'test.strings'", "unknown value type 77")
    key = b"test.ints"
    apos = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    _load_fails(_patched(path, data, apos + 4, "<Q", 2 ** 61), "'test.ints'", "past the file end")
    _load_fails(_patched(path, data, kpos + 8 + len(b"general.name"), "<I", 13), "unknown value type 13")


def test_bad_alignment(tmp_path, rng):
    path = tmp_path / "model.gguf"
    write_gguf(path, rng, alignment=64)
    data = path.read_bytes()
    key = b"general.alignment"
    pos = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    _load_fails(_patched(path, data, pos, "<I", 48), "power of two")
    _load_fails(_patched(path, data, pos, "<I", 0), "power of two")


def test_random_header_corruption_never_crashes(tiny, rng):
    path, _ = tiny
    data = path.read_bytes()
    with load_gguf(path) as f:
        header_end = f.data_offset
    out = path.with_name("fuzz.gguf")
    for _ in range(300):
        bad = bytearray(data)
        for p in rng.integers(0, header_end, rng.integers(1, 4)):
            bad[p] = rng.integers(0, 256)
        out.write_bytes(bytes(bad))
        try:
            load_gguf(out).close()
        except ModelError as e:
            assert str(e).startswith("[gguf] fuzz.gguf: ")


def test_not_a_file(tmp_path):
    with pytest.raises(ModelError, match="cannot open"):
        load_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ModelError, match="cannot open"):
        load_gguf(tmp_path)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="too short"):
        load_gguf(empty)


# ---- the real model -------------------------------------------------------------------------

def test_smollm2_metadata_and_shapes(smollm2):
    f = smollm2
    assert f.arch == "llama"
    assert f.get("llama.block_count") == 30
    assert f.get("llama.embedding_length") == 576
    assert f.get("llama.attention.head_count") == 9
    assert f.get("llama.attention.head_count_kv") == 3
    assert f.get("tokenizer.ggml.model") == "gpt2" and f.get("tokenizer.ggml.pre") == "smollm"
    assert len(f.get("tokenizer.ggml.tokens")) == 49152
    assert "<|im_start|>" in f.get("tokenizer.chat_template")
    assert len(f.tensors) == 2 + 30 * 9
    assert f.tensors["token_embd.weight"].shape == (49152, 576)
    assert f.tensors["token_embd.weight"].ggml_type == "Q8_0"
    assert f.tensors["blk.0.attn_k.weight"].shape == (192, 576)
    assert f.tensors["blk.0.attn_q.weight"].shape == (576, 576)
    assert f.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
    assert f.tensors["blk.29.ffn_up.weight"].shape == (1536, 576)
    assert f.tensors["output_norm.weight"].shape == (576,)
    types = {t.ggml_type for t in f.tensors.values()}
    assert types == {"Q4_1", "F32", "Q8_0"}
    assert f.tensor_bytes_total <= f.file_size - f.data_offset


@pytest.mark.parametrize("name", ["token_embd.weight", "blk.0.attn_k.weight", "blk.17.ffn_down.weight",
                                  "blk.29.attn_norm.weight"])
def test_smollm2_dequantize_matches_reference(smollm2, name):
    t = smollm2.tensors[name]
    ours = smollm2.dequantize(name)
    rows = t.n_elements // t.shape[-1]
    ref = gguf.quants.dequantize(t.raw.reshape(rows, -1), GQT[t.ggml_type]).reshape(t.shape)
    assert ours.shape == t.shape and ours.dtype == np.float32
    assert np.array_equal(ours, ref)
    if t.ggml_type == "Q4_1":
        codes, scales, offsets = smollm2.q4_blocks(name)
        assert np.array_equal(kquants.q4_blocks_dequantize(codes, scales, offsets), ours)


def test_kquants_reject_bad_sizes():
    with pytest.raises(ModelError, match="Q4_K blocks"):
        kquants.dequantize(np.zeros(145, np.uint8), "Q4_K")
    with pytest.raises(ModelError, match="F32 values"):
        kquants.dequantize(np.zeros(6, np.uint8), "F32")
    with pytest.raises(ModelError, match="no dequantizer for Q2_K"):
        kquants.dequantize(np.zeros(84, np.uint8), "Q2_K")
    with pytest.raises(ModelError, match="needs 2 blocks"):
        kquants.q4_1_to_q4_blocks(np.zeros(20, np.uint8), 2, 32)
