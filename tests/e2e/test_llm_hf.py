"""Hugging Face decoder folders (config.json + safetensors) end to end: tiny random Llama, Qwen2
and Mistral models saved by transformers, run by ember.Engine(folder), against transformers'
float32 logits and greedy generate; then corrupt safetensors headers and unsupported configs."""
import json
import os
import shutil
import struct

import numpy as np
import pytest

import ember
from ember.errors import ModelError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

VOCAB = 300                   # 256 byte tokens, <s>, </s>, then <extra_258> ... <extra_299>
IDS = [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 7, 299, 150, 3]
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256,
             bos_token_id=256, eos_token_id=257)

# name -> (transformers class, config overrides, save options)
CASES = {
    "llama": ("LlamaForCausalLM", {}, {}),
    "llama-tied-llama3-headdim": (
        "LlamaForCausalLM",
        dict(tie_word_embeddings=True, head_dim=32,
             rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=32)), {}),
    "llama-sharded": ("LlamaForCausalLM", {}, dict(max_shard_size="40KB")),
    "llama-bf16": ("LlamaForCausalLM", {}, dict(bf16=True)),
    "qwen2": ("Qwen2ForCausalLM", dict(rope_parameters=dict(rope_type="default", rope_theta=1000000.0)), {}),
    "mistral-linear": ("MistralForCausalLM",
                       dict(sliding_window=4096, rope_parameters=dict(rope_type="linear", factor=2.0,
                                                                      rope_theta=10000.0)), {}),
}


def _tokenizer_files(folder):
    """A byte-level BPE tokenizer (no merges) with <s>, </s> and filler specials up to VOCAB (a
    random model generates any id), and its tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    from ember.llm.tokenizer import _BYTE_CHAR
    vocab = {_BYTE_CHAR[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>"] + [f"<extra_{i}>" for i in range(258, VOCAB)])
    assert tok.get_vocab_size() == VOCAB
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}, f)


def _make_model(cls_name, overrides):
    cls = getattr(transformers, cls_name)
    cfg = cls.config_class(**{**SMALL, **overrides})
    torch.manual_seed(sum(map(ord, cls_name + str(sorted(overrides)))))
    model = cls(cfg).eval()
    with torch.no_grad():  # larger than the init's 0.02 so logits are O(1) and greedy is decisive
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, (cls_name, overrides, save) in CASES.items():
        folder = str(root / name)
        model = _make_model(cls_name, overrides)
        if save.get("bf16"):
            model = model.to(torch.bfloat16)
        model.save_pretrained(folder, **({"max_shard_size": save["max_shard_size"]}
                                         if "max_shard_size" in save else {}))
        _tokenizer_files(folder)
        out[name] = folder
    return out


def _reference(folder):
    """transformers on the saved folder, in float32: logits at every position and greedy ids."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None       # as ember's ignore_eos
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].numpy()
        gen = model.generate(torch.tensor([IDS]), do_sample=False, max_new_tokens=8,
                             attention_mask=torch.ones(1, len(IDS), dtype=torch.long))
    return logits, gen[0, len(IDS):].tolist()


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(folders, case):
    folder = folders[case]
    files = os.listdir(folder)
    if case == "llama-sharded":
        assert "model.safetensors.index.json" in files
        assert sum(f.endswith(".safetensors") for f in files) > 2
    ref_logits, ref_ids = _reference(folder)
    with ember.Engine(folder, threads=2, max_model_len=128, kv_cache_bytes=4 << 20, kv_dtype="f32") as eng:
        cfg = eng._llm.config
        assert not cfg.rope_interleaved and cfg.vocab_size == VOCAB
        assert cfg.tied_embeddings == (case == "llama-tied-llama3-headdim")
        assert cfg.attn_bias == (case == "qwen2")
        logits = eng._llm._all_logits(IDS)
        assert logits.shape == ref_logits.shape
        assert np.abs(ref_logits).max() > 1.0          # a test that could fail
        err = float(np.abs(logits - ref_logits).max())
        assert err < 1e-3, f"{case}: max |logit diff| {err}"
        out = eng.generate(IDS, max_tokens=8, ignore_eos=True)[0]
        assert out.token_ids == ref_ids, case
        plan = eng.memory_plan
        assert plan["file"] == case and plan["weight_types"] == (["BF16"] if case == "llama-bf16" else ["F32"])


def test_tokenizer_template_and_f16_cache(folders):
    with ember.Engine(folders["qwen2"], threads=2, max_model_len=64, kv_cache_bytes=1 << 20) as eng:
        assert eng._llm.chat_template == TEMPLATE
        assert eng.tokenizer.encode("Hi", add_special_tokens=False) == [72, 105]
        assert 257 in eng.tokenizer.eos_ids
        ids = eng._llm.apply_chat_template([{"role": "user", "content": "Hi"}])
        assert ids[0] == 256 and ids[-1] == 257
        c = eng.generate("Hello", max_tokens=4, ignore_eos=True)[0]
        assert len(c.token_ids) == 4 and isinstance(c.text, str)


def test_safetensors_reader_matches_library(folders):
    from safetensors.numpy import load_file

    from ember.llm.hf import load_hf_weights
    folder = folders["qwen2"]
    ref = load_file(os.path.join(folder, "model.safetensors"))
    with load_hf_weights(folder) as w:
        for hf_name, t in w.by_hf_name.items():
            np.testing.assert_array_equal(w.dequantize(t.name), ref[hf_name].astype(np.float32))
    # bf16: the library's numpy framework cannot read it; torch's bf16 -> f32 is the reference
    from safetensors.torch import load_file as load_torch
    folder = folders["llama-bf16"]
    ref = load_torch(os.path.join(folder, "model.safetensors"))
    with load_hf_weights(folder) as w:
        for hf_name, t in w.by_hf_name.items():
            assert t.ggml_type == "BF16"
            np.testing.assert_array_equal(w.dequantize(t.name), ref[hf_name].float().numpy())


# ---- errors ---------------------------------------------------------------------------------

def _rewrite(path, edit_header=None, raw_header=None, truncate=None):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    if edit_header:
        edit_header(header)
    hb = raw_header if raw_header is not None else json.dumps(header).encode()
    blob = struct.pack("<Q", len(hb)) + hb + data
    if truncate is not None:
        blob = blob[:truncate]
    with open(path, "wb") as f:
        f.write(blob)


def _copy(folders, tmp_path, case="llama"):
    dst = str(tmp_path / case)
    shutil.copytree(folders[case], dst)
    return dst


def _entry(key, **changes):
    def edit(h):
        h[key].update(changes)
    return edit


@pytest.mark.parametrize("corruption, message", [
    (dict(truncate=6), "too short"),
    (dict(truncate=200), "runs past the file end"),
    (dict(raw_header=b"{not json"), "not valid JSON"),
    (dict(raw_header=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}'), "twice"),
    (dict(edit_header=_entry("model.norm.weight", data_offsets=[0, 1 << 40])), "model.norm.weight"),
    (dict(edit_header=_entry("model.norm.weight", dtype="F16")), "needs 128 bytes"),
    (dict(edit_header=_entry("model.norm.weight", dtype="Q4")), "unknown dtype"),
    (dict(edit_header=_entry("model.norm.weight", shape=[-1])), "non-negative"),
    (dict(edit_header=_entry("model.norm.weight", shape=[1 << 40, 1 << 40])), "needs"),
    (dict(edit_header=_entry("model.norm.weight", data_offsets=[4])), "[begin, end]"),
    (dict(edit_header=_entry("model.norm.weight", dtype="I32")), "I32"),
    (dict(edit_header=_entry("model.norm.weight", shape=[8, 8])), "expected [64]"),
])
def test_corrupt_safetensors(folders, tmp_path, corruption, message):
    folder = _copy(folders, tmp_path)
    _rewrite(os.path.join(folder, "model.safetensors"), **corruption)
    with pytest.raises(ModelError, match="model.safetensors") as e:
        ember.Engine(folder, threads=2, max_model_len=64)
    assert message in str(e.value)


def test_overlapping_and_wrong_index(folders, tmp_path):
    folder = _copy(folders, tmp_path)
    path = os.path.join(folder, "model.safetensors")

    def overlap(h):
        h["model.norm.weight"]["data_offsets"] = h["model.embed_tokens.weight"]["data_offsets"][:1] * 2
        h["model.norm.weight"]["data_offsets"][1] += 256
    _rewrite(path, edit_header=overlap)
    with pytest.raises(ModelError, match="overlap"):
        ember.Engine(folder, threads=2, max_model_len=64)

    folder = _copy(folders, tmp_path, "llama-sharded")
    index = os.path.join(folder, "model.safetensors.index.json")
    with open(index) as f:
        idx = json.load(f)
    idx["weight_map"]["model.norm.weight"] = "../model.safetensors"
    with open(index, "w") as f:
        json.dump(idx, f)
    with pytest.raises(ModelError, match="not a file name in the folder"):
        ember.Engine(folder, threads=2, max_model_len=64)


def _edit_config(folder, **changes):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(path, "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("changes, message", [
    (dict(architectures=["GPT2LMHeadModel"]),
     "supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM"),
    (dict(hidden_size=None), "key 'hidden_size' is missing"),
    (dict(num_hidden_layers="2"), "key 'num_hidden_layers' = '2' is not a positive int"),
    (dict(num_hidden_layers=3), "model.layers.2.input_layernorm.weight' is missing"),
    (dict(num_hidden_layers=1), "not part of a 1-layer llama model"),
    (dict(vocab_size=301), "vocab_size"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=1e4)), "rope type 'yarn'"),
    (dict(rope_parameters=dict(rope_type="linear", rope_theta=1e4)), "factor"),
    (dict(attention_bias=True), "attention_bias"),
])
def test_bad_config(folders, tmp_path, changes, message):
    from ember.llm.hf import load_hf

    folder = _copy(folders, tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(ModelError) as e:
        load_hf(folder)[1].close()
    assert message in str(e.value)


def test_tie_flag_and_stored_head(folders, tmp_path):
    """As transformers 5: a stored lm_head is used even when config.json says tied (it warns and
    does not tie); an untied config without one is an error."""
    from ember.llm.hf import load_hf

    folder = _copy(folders, tmp_path)
    _edit_config(folder, tie_word_embeddings=True)
    cfg, w, _, _ = load_hf(folder)
    w.close()
    assert not cfg.tied_embeddings and "output.weight" in w.tensors
    folder = _copy(folders, tmp_path, "llama-tied-llama3-headdim")
    _edit_config(folder, tie_word_embeddings=False)
    with pytest.raises(ModelError, match="tie_word_embeddings.*lm_head.weight is not in"):
        load_hf(folder)


def test_routing(folders, tmp_path):
    from ember.llm.hf import is_hf_llm_folder

    assert is_hf_llm_folder(folders["mistral-linear"])
    folder = _copy(folders, tmp_path)
    _edit_config(folder, architectures=["BertModel"], model_type="bert")
    assert not is_hf_llm_folder(folder)
    with pytest.raises(ModelError):       # not an LLM folder: the existing ONNX path refuses it
        ember.Engine(folder)
    # no `architectures`: model_type decides; the sliding window caps the context
    folder = _copy(folders, tmp_path, "mistral-linear")
    _edit_config(folder, architectures=None, sliding_window=64)
    with ember.Engine(folder, threads=2, max_model_len=64, kv_cache_bytes=1 << 20) as eng:
        assert eng._llm.config.context_length == 64 and eng._llm.config.arch == "mistral"
