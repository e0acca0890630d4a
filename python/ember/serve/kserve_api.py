"""KServe v2 (Open Inference Protocol) routes: health, server and model metadata, readiness,
and /infer with JSON tensors or the binary-tensor extension; plus the model-repository
extension (index, load, unload) and rollback."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ember.serve.kserve_codec import encode_infer_response, model_metadata, parse_infer_request
from ember.serve.models import NotFound, Unavailable
from ember.serve.production import prediction_of

router = APIRouter()


@router.get("/v2/health/live")
async def live():
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request):
    srv = request.app.state.server
    missing = srv.not_ready()
    if missing is None:
        return {"ready": True}
    return JSONResponse({"ready": False, "error": missing}, status_code=503,
                        headers={"Retry-After": "2"})


@router.get("/v2")
async def server_metadata():
    from ember import __version__
    return {"name": "ember", "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository"]}


def _metadata(srv, name, version):
    servable = srv.resolve(name, version)
    versions = [str(r.version) for r in srv.manager.serving(name)]
    if servable.kind == "llm":
        return {"name": name, "versions": versions, "platform": "ember_llm",
                "inputs": [], "outputs": []}
    eng = servable.engine
    return model_metadata(name, versions, "onnx", eng.inputs, eng.outputs)


@router.get("/v2/models/{name}")
async def metadata(name: str, request: Request):
    return _metadata(request.app.state.server, name, None)


@router.get("/v2/models/{name}/versions/{version}")
async def metadata_version(name: str, version: str, request: Request):
    return _metadata(request.app.state.server, name, version)


def _ready(srv, name, version):
    try:
        srv.resolve(name, version)
    except Unavailable as e:
        return JSONResponse({"name": name, "ready": False, "error": str(e)}, status_code=503)
    return {"name": name, "ready": True}


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, request: Request):
    return _ready(request.app.state.server, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: str, request: Request):
    return _ready(request.app.state.server, name, version)


async def _infer(request: Request, name: str, version: str | None):
    srv = request.app.state.server
    # The body first: no await between choosing the version and holding it, so a version swap
    # cannot retire the chosen one while this request reads its body (a spurious 503).
    body = await request.body()
    servable = srv.resolve_request(request, name, version)   # sticky keys: headers only
    track = srv.track(request, servable, "infer")
    if servable.kind != "graph":
        raise Unavailable(f"[serve] {name} is an LLM: use /v1/completions or /v1/chat/completions",
                          400, 0)
    header = request.headers.get("inference-header-content-length")
    try:
        header_len = int(header) if header is not None else None
    except ValueError:
        header_len = -1  # the codec rejects it, naming the header
    eng = servable.engine
    req = parse_infer_request(body, header_len, eng.inputs, eng.outputs,
                              max_elements=srv.max_elements)
    with servable.hold():
        # No disconnect watch here: a graph run takes milliseconds, and a queued request whose
        # client left still costs only its own rows.
        results, queue_s = await srv.with_deadline(servable,
                                                   servable.batcher.submit(req.feeds, req.outputs))
    srv.metrics.queue.labels(*servable.labels).observe(queue_s)
    data, headers = encode_infer_response(name, str(servable.version), req.id, results,
                                          req.binary_outputs)
    track.done(200)
    if servable.monitor is not None:
        rows = servable.monitor.features_graph(req.feeds, results)
        srv.production.observe(servable, getattr(request.state, "request_id", None), rows,
                               time.perf_counter() - track.t0,
                               prediction=prediction_of(rows[0]) if rows else None)
    return Response(content=data, headers=headers)


@router.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer_version(name: str, version: str, request: Request):
    return await _infer(request, name, version)


# ---- model repository extension ----

@router.post("/v2/repository/index")
async def repository_index(request: Request):
    srv = request.app.state.server
    return [rec.to_json() for _, rec in sorted(srv.manager.records.items())]


@router.post("/v2/repository/models/{name}/load")
async def repository_load(name: str, request: Request):
    srv = request.app.state.server
    await srv.load(name)
    return {"name": name, "serving": [str(r.version) for r in srv.manager.serving(name)]}


@router.post("/v2/repository/models/{name}/unload")
async def repository_unload(name: str, request: Request):
    srv = request.app.state.server
    await srv.unload(name)
    return {"name": name, "unloaded": True}


@router.post("/v2/repository/models/{name}/rollback")
async def repository_rollback(name: str, request: Request):
    srv = request.app.state.server
    if name not in srv.manager.names():
        raise NotFound(f"[serve] unknown model {name!r}")
    version = await srv.rollback(name)
    return {"name": name, "serving": str(version)}
