"""Text <-> token ids for ember's LLMs, on HF `tokenizers`, built from a tokenizer.json or from the
vocabulary a GGUF file carries.

GGUF stores llama.cpp's view of a tokenizer: `tokenizer.ggml.model` names the algorithm ("gpt2":
byte-level BPE with merges; "llama": SentencePiece-style BPE with scores and <0xXX> byte
fallback), `tokenizer.ggml.pre` names the pre-tokenizer split. Both are rebuilt here as HF
components so encode/decode run in Rust. Token types follow llama.cpp: 3 = CONTROL (special,
matched whole in text, skippable on decode), 4 = USER_DEFINED (matched whole, not special).

`IncrementalDecoder` streams text while tokens arrive: it feeds each token's bytes to an
incremental UTF-8 decoder, so a character split over tokens comes out once, whole.
"""
from __future__ import annotations

import codecs
import json
import os
import re

from ember.errors import InputError, ModelError

__all__ = ["Tokenizer", "IncrementalDecoder", "PRE_TOKENIZER_SPLITS"]

# llama.cpp token types
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> the regex splits llama.cpp applies in order (each to the pieces the
# previous one left), and whether BPE takes a whole word that is in the vocabulary as is.
PRE_TOKENIZER_SPLITS = {}
for _names, _splits, _ignore_merges in [
    (("default", "gpt-2", "gpt2", "mpt", "olmo", "jais"), (_GPT2,), False),
    (("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"),
     (r"\p{N}", _GPT2), False),
    (("llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral", "dbrx", "smaug-bpe"), (_LLAMA3,), True),
    (("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"), (_QWEN2,), False),
]:
    for _n in _names:
        PRE_TOKENIZER_SPLITS[_n] = (_splits, _ignore_merges)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes stand for themselves,
    the other 68 bytes take the code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


_BYTE_CHAR = _bytes_to_unicode()
_CHAR_BYTE = {c: b for b, c in _BYTE_CHAR.items()}
_SPM_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class Tokenizer:
    """encode/decode over an HF `tokenizers.Tokenizer`, with the model's special ids.

    `eos_ids`: the ids that end a generation: eos plus, where the file names them, the
    end-of-turn and end-of-message tokens.
    """

    def __init__(self, hf, *, origin, kind, bos_id=None, eos_id=None, eos_ids=(), special_ids=(),
                 chat_template=None, strip_leading_space=False):
        self.hf = hf
        self.origin = origin
        self.kind = kind                       # "byte_level" | "spm" | "other"
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.eos_ids = frozenset(i for i in (eos_id, *eos_ids) if i is not None)
        self.special_ids = frozenset(special_ids)
        self.chat_template = chat_template
        self._strip_leading_space = strip_leading_space
        self._bytes_cache = {}

    # ---- construction ----

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """From a tokenizer.json (or the folder holding it). tokenizer_config.json and
        generation_config.json beside it, when present, give the special tokens and template."""
        tokenizers = _import_tokenizers()
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        folder = os.path.dirname(path)
        try:
            hf = tokenizers.Tokenizer.from_file(path)
        except Exception as e:           # tokenizers raises plain Exception on a bad file
            raise ModelError(f"[tokenizer] {path}: cannot load: {e}") from e
        cfg = _read_json(os.path.join(folder, "tokenizer_config.json"))
        gen = _read_json(os.path.join(folder, "generation_config.json"))

        def tid(tok):
            if isinstance(tok, dict):
                tok = tok.get("content")
            return hf.token_to_id(tok) if isinstance(tok, str) else None

        bos_id, eos_id = tid(cfg.get("bos_token")), tid(cfg.get("eos_token"))
        eos = gen.get("eos_token_id")
        eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int)]
        specials = [i for i, t in hf.get_added_tokens_decoder().items() if t.special]
        dec = json.loads(hf.to_str()).get("decoder") or {}
        kind, strip = _decoder_kind(dec)
        template = cfg.get("chat_template")
        return cls(hf, origin=path, kind=kind, bos_id=bos_id, eos_id=eos_id, eos_ids=eos_ids,
                   special_ids=specials, chat_template=template if isinstance(template, str) else None,
                   strip_leading_space=strip)

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """From a GGUF file's `tokenizer.ggml.*` metadata (a GGUFFile or a path)."""
        from ember.llm.gguf import GGUFFile, load_gguf

        if isinstance(gguf_file, GGUFFile):
            return _from_gguf_metadata(cls, gguf_file.metadata, gguf_file.name)
        with load_gguf(gguf_file) as f:
            return _from_gguf_metadata(cls, f.metadata, f.name)

    @classmethod
    def from_gguf_metadata(cls, metadata, origin: str = "<metadata>") -> "Tokenizer":
        """From a dict of GGUF metadata (`tokenizer.ggml.*` keys); `origin` names it in errors."""
        return _from_gguf_metadata(cls, metadata, origin)

    # ---- the API ----

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are matched
        whole; add_special_tokens adds the BOS/EOS the tokenizer is configured to add."""
        if not isinstance(text, str):
            raise InputError(f"[tokenizer] encode takes a str, not {type(text).__name__}")
        try:
            return self.hf.encode(text, add_special_tokens=add_special_tokens).ids
        except TypeError:
            _check_text(text)
            raise

    def encode_batch(self, texts, add_special_tokens: bool = True) -> list[list[int]]:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InputError(f"[tokenizer] encode takes str items, not {type(t).__name__}")
        try:
            return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=add_special_tokens)]
        except TypeError:
            for t in texts:
                _check_text(t)
            raise

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.hf.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, **extra) -> str:
        """The prompt text for `messages` from the model's chat template (see chat.render_chat);
        bos_token / eos_token are this tokenizer's."""
        from ember.llm.chat import render_chat

        if self.chat_template is None:
            raise ModelError(f"[chat] {self.origin}: the model has no chat template")
        specials = dict(bos_token=self._token_text(self.bos_id), eos_token=self._token_text(self.eos_id))
        specials.update(extra)
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           **specials)

    def _token_text(self, token_id):
        return "" if token_id is None else (self.hf.id_to_token(token_id) or "")

    def incremental_decoder(self, skip_special_tokens: bool = False) -> "IncrementalDecoder":
        return IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for in decoded text (byte-level and SentencePiece vocabularies)."""
        b = self._bytes_cache.get(token_id)
        if b is None:
            tok = self.hf.id_to_token(int(token_id))
            if tok is None:
                raise InputError(f"[tokenizer] token id {token_id} is outside the vocabulary "
                                 f"({self.vocab_size})")
            b = _token_bytes(tok, self.kind)
            self._bytes_cache[token_id] = b
        return b

    def __repr__(self):
        return f"Tokenizer({self.origin!r}, {self.kind}, vocab={self.vocab_size})"

    def _check_ids(self, ids):
        out = []
        n = self.vocab_size
        for i in ids:
            try:
                j = int(i)
            except (TypeError, ValueError):
                raise InputError(f"[tokenizer] token ids must be ints, got {i!r}") from None
            if not 0 <= j < n:
                raise InputError(f"[tokenizer] token id {j} is outside the vocabulary ({n})")
            out.append(j)
        return out


class IncrementalDecoder:
    """Streams decoded text token by token: push() returns only complete characters and holds
    back a UTF-8 sequence split across tokens; flush() returns what is left (an incomplete
    sequence as U+FFFD). The concatenated pieces equal `tokenizer.decode(all ids)`."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._bytewise = tokenizer.kind in ("byte_level", "spm")
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = tokenizer._strip_leading_space
        self._ids = []            # text-diff fallback for decoders that are not bytewise
        self._prefix = self._read = 0

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        if not self._bytewise:
            return self._push_by_diff(token_id)
        if self._skip and token_id in self._tok.special_ids:
            self._tok.token_bytes(token_id)            # still validates the id
            return ""
        return self._emit(self._utf8.decode(self._tok.token_bytes(token_id)))

    def flush(self) -> str:
        if not self._bytewise:
            tail = self._decode(self._ids[self._prefix:])
            head = self._decode(self._ids[self._prefix:self._read])
            self._ids, self._prefix, self._read = [], 0, 0
            return tail[len(head):]
        return self._emit(self._utf8.decode(b"", final=True))

    def _emit(self, text: str) -> str:
        if self._strip and text:          # SentencePiece: the decoded text drops one leading space
            self._strip = False
            if text[0] == " ":
                text = text[1:]
        return text

    def _decode(self, ids):
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def _push_by_diff(self, token_id):
        # decode a short window and return what grew, unless it ends in a partial character
        self._ids.append(token_id)
        head = self._decode(self._ids[self._prefix:self._read])
        full = self._decode(self._ids[self._prefix:])
        if len(full) > len(head) and not full.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full[len(head):]
        return ""


# ---- GGUF -----------------------------------------------------------------------------------

def _from_gguf_metadata(cls, md, name) -> Tokenizer:
    tokenizers = _import_tokenizers()
    origin = name

    def fail(msg):
        raise ModelError(f"[tokenizer] {origin}: {msg}")

    model = md.get("tokenizer.ggml.model")
    if model is None:
        fail("no tokenizer in the file (metadata key 'tokenizer.ggml.model' is missing)")
    tokens = md.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        fail("metadata key 'tokenizer.ggml.tokens' must be a non-empty list of strings")
    n = len(tokens)
    types = md.get("tokenizer.ggml.token_type")
    if types is None:
        types = [TOKEN_NORMAL] * n
    elif not isinstance(types, list) or len(types) != n or not all(isinstance(t, int) for t in types):
        fail(f"metadata key 'tokenizer.ggml.token_type' must be {n} ints, one per token")

    def token_id(key, required=False):
        v = md.get(key)
        if v is None:
            if required:
                fail(f"metadata key '{key}' is missing")
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
            fail(f"metadata key '{key}' = {v!r} is not a token id below {n}")
        return v

    bos_id = token_id("tokenizer.ggml.bos_token_id")
    eos_id = token_id("tokenizer.ggml.eos_token_id")
    unk_id = token_id("tokenizer.ggml.unknown_token_id")
    end_ids = [token_id("tokenizer.ggml.eot_token_id"), token_id("tokenizer.ggml.eom_token_id")]

    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)           # a repeated string keeps its first id
    if model == "gpt2":
        hf, kind, strip = _gguf_byte_level(tokenizers, md, tokens, vocab, fail), "byte_level", False
        default_bos = md.get("tokenizer.ggml.pre") in ("llama-bpe", "llama3", "llama-v3")
    elif model == "llama":
        hf, kind, strip = _gguf_spm(tokenizers, md, tokens, vocab, unk_id, fail)
        default_bos = True
    else:
        fail(f"tokenizer model {model!r} is not supported (supported: gpt2, llama)")

    # control tokens are special (matched whole, skipped on request); user-defined ones are
    # matched whole but are ordinary text
    special = [i for i, t in enumerate(types) if t == TOKEN_CONTROL]
    user = [i for i, t in enumerate(types) if t == TOKEN_USER_DEFINED]
    added = [tokenizers.AddedToken(tokens[i], special=True, normalized=False) for i in special]
    added += [tokenizers.AddedToken(tokens[i], special=False, normalized=False) for i in user]
    if added:
        hf.add_tokens(added)
    if hf.get_vocab_size(with_added_tokens=True) != n:
        fail(f"the vocabulary rebuilds to {hf.get_vocab_size(with_added_tokens=True)} tokens, "
             f"the file has {n} (repeated token strings?)")

    add_bos = md.get("tokenizer.ggml.add_bos_token", default_bos)
    add_eos = md.get("tokenizer.ggml.add_eos_token", False)
    _set_post_processor(tokenizers, hf, tokens, bos_id if add_bos else None, eos_id if add_eos else None, fail)
    template = md.get("tokenizer.chat_template")
    return cls(hf, origin=origin, kind=kind, bos_id=bos_id, eos_id=eos_id, eos_ids=end_ids,
               special_ids=special, chat_template=template if isinstance(template, str) else None,
               strip_leading_space=strip)


def _gguf_byte_level(tokenizers, md, tokens, vocab, fail):
    from tokenizers import Regex, decoders, models, pre_tokenizers

    pre = md.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZER_SPLITS:
        fail(f"pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; supported: "
             f"{', '.join(sorted(PRE_TOKENIZER_SPLITS))}")
    splits, ignore_merges = PRE_TOKENIZER_SPLITS[pre]
    merges = md.get("tokenizer.ggml.merges")
    if not isinstance(merges, list):
        fail("a gpt2 tokenizer needs 'tokenizer.ggml.merges' (a list of strings)")
    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else ()
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab or parts[0] + parts[1] not in vocab:
            fail(f"merge #{i} {m!r} is not two vocabulary tokens whose join is a token")
        pairs.append((parts[0], parts[1]))
    try:
        bpe = models.BPE(vocab, pairs, ignore_merges=ignore_merges)
    except Exception as e:
        fail(f"cannot build the BPE model: {e}")
    hf = tokenizers.Tokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    return hf


def _gguf_spm(tokenizers, md, tokens, vocab, unk_id, fail):
    """SentencePiece BPE as llama.cpp runs it: merge the adjacent pair whose join scores best;
    characters missing from the vocabulary fall back to <0xXX> byte tokens."""
    from tokenizers import decoders, models, pre_tokenizers

    scores = md.get("tokenizer.ggml.scores")
    if (not isinstance(scores, list) or len(scores) != len(tokens)
            or not all(isinstance(s, (int, float)) for s in scores)):
        fail(f"a llama tokenizer needs 'tokenizer.ggml.scores': {len(tokens)} numbers")
    merges = md.get("tokenizer.ggml.merges")
    if isinstance(merges, list) and merges:
        pairs = [tuple(m.split(" ", 1)) for m in merges]
    else:
        pairs = _merges_from_scores(tokens, scores, vocab)
    unk = tokens[unk_id] if unk_id is not None else None
    try:
        bpe = models.BPE(vocab, pairs, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except Exception as e:
        fail(f"cannot build the BPE model: {e}")
    hf = tokenizers.Tokenizer(bpe)
    add_space = md.get("tokenizer.ggml.add_space_prefix", True)
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if add_space else "never",
                                                split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    hf.decoder = decoders.Sequence(steps)
    return hf, "spm", bool(add_space)


def _merges_from_scores(tokens, scores, vocab):
    """BPE merges equivalent to score-driven merging: every split (left, right) of a token into
    two vocabulary tokens, best-scoring join first; ties go to the longer left, then longer
    right piece, then vocabulary order."""
    found = []
    for i, tok in enumerate(tokens):
        if vocab.get(tok) != i:
            continue
        for k in range(1, len(tok)):
            left, right = tok[:k], tok[k:]
            li, ri = vocab.get(left), vocab.get(right)
            if li is not None and ri is not None:
                found.append((-scores[i], -len(left), -len(right), i, li, ri, left, right))
    found.sort()
    return [(f[6], f[7]) for f in found]


def _set_post_processor(tokenizers, hf, tokens, bos, eos, fail):
    """BOS/EOS added around the text by `encode(add_special_tokens=True)`."""
    from tokenizers import processors

    if bos is None and eos is None:
        return

    def seq(piece, type_id):
        return ([f"{tokens[bos]}:{type_id}"] if bos is not None else []) + [f"{piece}:{type_id}"] \
            + ([f"{tokens[eos]}:{type_id}"] if eos is not None else [])

    specials = {tokens[i]: i for i in (bos, eos) if i is not None}
    try:
        hf.post_processor = processors.TemplateProcessing(
            single=seq("$A", 0), pair=seq("$A", 0) + seq("$B", 1), special_tokens=list(specials.items()))
    except Exception as e:
        fail(f"cannot set the BOS/EOS template: {e}")


# ---- helpers --------------------------------------------------------------------------------

def _token_bytes(tok: str, kind: str) -> bytes:
    if kind == "byte_level":
        try:
            return bytes(_CHAR_BYTE[c] for c in tok)
        except KeyError:
            return tok.encode("utf-8")     # an added token spelled outside the byte alphabet
    if kind == "spm":
        m = _SPM_BYTE.fullmatch(tok)
        if m:
            return bytes([int(m.group(1), 16)])
        return tok.replace("▁", " ").encode("utf-8")
    raise AssertionError(kind)


def _decoder_kind(dec: dict):
    """('byte_level' | 'spm' | 'other', strips one leading space) from a tokenizer.json decoder."""
    t = dec.get("type")
    if t == "ByteLevel":
        return "byte_level", False
    if t == "Sequence":
        steps = dec.get("decoders") or []
        names = [s.get("type") for s in steps]
        if (names[:3] == ["Replace", "ByteFallback", "Fuse"] and steps[0].get("content") == " "
                and (steps[0].get("pattern") or {}).get("String") == "▁" and names[3:] in ([], ["Strip"])):
            strip = names[3:] == ["Strip"]
            if strip and not (steps[3].get("content") == " " and steps[3].get("start") == 1
                              and steps[3].get("stop") == 0):
                return "other", False
            return "spm", strip
    return "other", False


def _check_text(text: str):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"[tokenizer] text is not valid Unicode: {e.reason} at character {e.start} "
                         f"({text[e.start]!r})") from None


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            v = json.load(f)
        return v if isinstance(v, dict) else {}
    except (OSError, ValueError):
        return {}


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ModelError("[tokenizer] the `tokenizers` package is needed for LLM text "
                         "(pip install tokenizers)") from e
    return tokenizers
