"""`ember serve MODEL` or `ember serve --model-repository DIR`: OpenAI-compatible and KServe v2
HTTP serving (FastAPI + uvicorn), loopback only unless --host says otherwise.

Endpoints: /v1/completions, /v1/chat/completions (SSE with "stream": true), /v1/models,
/v1/embeddings (sentence encoders); /v2/models/{name}[/versions/{v}]/infer (JSON or binary
tensors), /v2/models/{name}, /v2/health/live, /v2/health/ready; /v2/repository/index and
/v2/repository/models/{name}/load|unload|rollback; /metrics (Prometheus).

A repository holds DIR/<name>/<version>/model.(onnx|gguf) or model/ (a Hugging Face folder) and
an optional DIR/<name>/config.toml (see ember/serve/config.py); new versions are picked up while
serving. SIGTERM or Ctrl-C drains the requests in flight, then exits.
"""
from __future__ import annotations

import logging
import os

from ember.errors import EmberError


def add_parser(sub):
    import argparse
    p = sub.add_parser("serve", help="serve models over HTTP (OpenAI-compatible and KServe v2)",
                       description=__doc__.strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a model path or known name (smollm2-135m, minilm-l6)")
    p.add_argument("--model-repository", metavar="DIR", help="serve every model in DIR, watched")
    p.add_argument("--name", help="the public name of MODEL (default: its name or file stem)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("EMBER_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $EMBER_API_KEY; health "
                        "probes stay open)")
    p.add_argument("--threads", type=int, default=None, help="cap on MODEL's share of the pool")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="MODEL (graph): rows per merged run (dynamic batching)")
    p.add_argument("--max-queue-delay-ms", type=float, default=None,
                   help="MODEL (graph): how long a request waits for others to batch with")
    p.add_argument("--max-queue-size", type=int, default=None,
                   help="MODEL: requests queued or running before 429 (default 256)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="MODEL (LLM): concurrent sequences")
    p.add_argument("--max-model-len", type=int, default=None, help="MODEL (LLM): context length")
    p.add_argument("--request-timeout", type=float, default=0.0, metavar="S",
                   help="per-request timeout in seconds, for models whose config sets none")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit (MiB)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between repository scans (0: no watching)")
    p.add_argument("--state-path", help="the server's state file (default: under ~/.cache/ember)")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds to drain requests in flight at shutdown")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(fn=cmd_serve)
    return p


def _single_config(args):
    from ember.serve.config import parse_config
    data: dict = {}
    if args.threads is not None:
        data["threads"] = args.threads
    if args.max_queue_size is not None:
        data["max_queue_size"] = args.max_queue_size
    batching = {k: v for k, v in (("max_batch_size", args.max_batch_size),
                                  ("max_queue_delay_ms", args.max_queue_delay_ms)) if v is not None}
    if batching:
        data["batching"] = batching
    llm = {k: v for k, v in (("max_num_seqs", args.max_num_seqs),
                             ("max_model_len", args.max_model_len)) if v is not None}
    if llm:
        data["llm"] = llm
    return parse_config(data, "command line")


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from ember.serve.app import ServeSettings, create_app
    except ImportError as e:
        raise EmberError(f"[serve] needs the serving extras: pip install 'ember[serve]' ({e})") from None
    if (args.model is None) == (args.model_repository is None):
        raise EmberError("[serve] give MODEL or --model-repository DIR (one of them)")
    if args.model_repository and any(v is not None for v in (
            args.threads, args.max_batch_size, args.max_queue_delay_ms, args.max_queue_size,
            args.max_num_seqs, args.max_model_len, args.name)):
        raise EmberError("[serve] with --model-repository, per-model settings go in "
                         "DIR/<name>/config.toml")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(
        model=args.model, name=args.name,
        config=_single_config(args) if args.model else None,
        repository=args.model_repository, state_path=args.state_path,
        poll_interval_s=args.poll_interval, api_key=args.api_key or None,
        max_body_bytes=int(args.max_body_mb * (1 << 20)), request_timeout_s=args.request_timeout)
    if settings.config is None:
        from ember.serve.config import ModelConfig
        settings.config = ModelConfig()
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log, timeout_graceful_shutdown=args.graceful_timeout)
    return 0


def add_rollback_parser(sub):
    p = sub.add_parser("rollback", help="make a running server serve the previous version of a model",
                       description="Holds back the newest serving version of NAME on a running "
                       "`ember serve --model-repository` and serves the one before it; requests in "
                       "flight finish on the version they started on. `POST /v2/repository/models/"
                       "NAME/load` ends the hold.")
    p.add_argument("name", help="the model's name in the repository")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("EMBER_API_KEY"))
    p.set_defaults(fn=cmd_rollback)
    return p


def cmd_rollback(args) -> int:
    import urllib.parse

    from ember.serve.client import request_json
    name = urllib.parse.quote(args.name, safe="")
    body = request_json("POST", f"{args.url.rstrip('/')}/v2/repository/models/{name}/rollback",
                        area="rollback", api_key=args.api_key, timeout=600)
    print(f"{args.name}: now serving version {body['serving']}")
    return 0
