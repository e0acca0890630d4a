"""Decoder LLMs: GGUF weights (gguf.py, kquants.py), tokenizers (tokenizer.py), chat templates
(chat.py) and the graph builder. Names below load their submodule on first use: `tokenizers`
and `jinja2` are needed only by the parts that use them."""

_LAZY = {
    "load_gguf": "ember.llm.gguf", "GGUFFile": "ember.llm.gguf", "GGUFTensor": "ember.llm.gguf",
    "Tokenizer": "ember.llm.tokenizer", "IncrementalDecoder": "ember.llm.tokenizer",
    "render_chat": "ember.llm.chat",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
