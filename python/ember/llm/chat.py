"""Chat templates: the Jinja2 template a model ships (GGUF `tokenizer.chat_template`,
tokenizer_config.json) turns a list of messages into the prompt text.

Templates come with model files, so they are untrusted: they render in jinja2's immutable
sandbox, set up as transformers' `apply_chat_template` does (trim_blocks, lstrip_blocks,
loopcontrols, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII), so outputs
match it. On top of the sandbox: touching an unsafe attribute fails at once (the stock sandbox
hands back an Undefined that renders as ""), `*`, `**` and `+` cannot build huge values, and the
output is capped. A template's own error (`raise_exception`) is an InputError (the messages are
what it rejects); a template that does not parse or breaks the sandbox is a ModelError.
NOTE: a loop that keeps doubling a string through `~` or `namespace` is not bounded step by step;
the output cap only catches what is emitted.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

from ember.errors import InputError, ModelError

__all__ = ["render_chat", "MAX_OUTPUT_CHARS"]

MAX_OUTPUT_CHARS = 1 << 24          # 16 Mi characters of prompt is far past any context window
_MAX_VALUE_LEN = 1 << 22            # longest str/list one `*` or `+` may build
_MAX_INT_BITS = 1 << 16             # integers a template may compute


def render_chat(template: str, messages, add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", **extra) -> str:
    """Renders `messages` ([{"role": str, "content": str, ...}]) with a chat template.

    `extra` is passed to the template as variables (tools, documents, enable_thinking, ...).
    """
    if not isinstance(template, str) or not template:
        raise ModelError("[chat] the model has no chat template (a non-empty str is needed)")
    msgs = _check_messages(messages)
    compiled = _compile(template)
    jinja2 = _jinja()
    env_vars = dict(tools=None, documents=None)
    env_vars.update(extra)
    env_vars.update(messages=msgs, add_generation_prompt=bool(add_generation_prompt),
                    bos_token=bos_token, eos_token=eos_token)
    out, size = [], 0
    try:
        for piece in compiled.generate(**env_vars):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise ModelError(f"[chat] the chat template produced more than {MAX_OUTPUT_CHARS} "
                                 "characters; refusing to render it")
            out.append(piece)
    except _TemplateRaised as e:
        raise InputError(f"[chat] the chat template rejected the messages: {e.message}") from None
    except jinja2.exceptions.SecurityError as e:
        raise ModelError(f"[chat] the chat template tried an unsafe operation: {e}") from None
    except (ModelError, InputError):
        raise
    except RecursionError:
        raise ModelError("[chat] the chat template recursed too deeply") from None
    except Exception as e:          # a template bug: UndefinedError, TypeError, ...
        raise ModelError(f"[chat] the chat template failed: {type(e).__name__}: {e}") from None
    return "".join(out)


def _check_messages(messages):
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise InputError(f"[chat] messages must be a list of dicts, not {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InputError(f"[chat] message {i} must be a dict with 'role' and 'content', "
                             f"not {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise InputError(f"[chat] message {i}: 'role' must be a non-empty str, got {role!r}")
        if not isinstance(content, str):
            raise InputError(f"[chat] message {i} ({role}): 'content' must be a str, "
                             f"got {type(content).__name__}")
        out.append(dict(m))
    return out


# ---- the environment ------------------------------------------------------------------------

def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError as e:
        raise ModelError("[chat] chat templates need the `jinja2` package (pip install jinja2)") from e
    return jinja2


class _TemplateRaised(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)


@lru_cache(maxsize=1)
def _environment():
    jinja2 = _jinja()
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+"})

        def unsafe_undefined(self, obj, attribute):
            raise SecurityError(f"access to attribute {attribute!r} of a "
                                f"{type(obj).__name__!r} object is not allowed")

        def call_binop(self, context, operator, left, right):
            _check_binop(operator, left, right, SecurityError)
            return super().call_binop(context, operator, left, right)

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks
        in transformers); rendering just emits the body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """namespace() that refuses underscore names, as transformers' does."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for k in attrs:
                Namespace._check(k)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"namespace attribute {name!r} starts with an underscore")

    def raise_exception(message):
        raise _TemplateRaised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    def make_dict(*args, **kwargs):
        return dict(*args, **kwargs)

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now,
                       namespace=Namespace, dict=make_dict)
    return env


def _check_binop(op, left, right, error):
    """Refuses one operation that would build a huge value (numbers or sequences)."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "**":
        if ints and abs(left) > 1 and right > 0 and abs(left).bit_length() * right > _MAX_INT_BITS:
            raise error(f"{left!r} ** {right!r} is too large")
        return
    if ints:
        if abs(left).bit_length() + abs(right).bit_length() > _MAX_INT_BITS:
            raise error(f"an integer result of more than {_MAX_INT_BITS} bits is too large")
        return
    sized = (str, list, tuple, bytes)
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int) and len(seq) * n > _MAX_VALUE_LEN:
                raise error(f"a {type(seq).__name__} of {len(seq)} repeated {n} times is too large")
    elif op == "+" and isinstance(left, sized) and isinstance(right, sized):
        if len(left) + len(right) > _MAX_VALUE_LEN:
            raise error(f"joining values of {len(left)} and {len(right)} items is too large")


@lru_cache(maxsize=32)
def _compile(template: str):
    jinja2 = _jinja()
    try:
        return _environment().from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ModelError(f"[chat] the chat template does not parse: line {e.lineno}: {e.message}") from None
    except jinja2.exceptions.TemplateError as e:
        raise ModelError(f"[chat] the chat template does not compile: {e}") from None
