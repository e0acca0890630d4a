"""Routes of the production layer: POST /v2/feedback (outcomes tied to request ids),
GET /v2/models/{name}/drift (the drift report of a version), GET /v2/models/{name}/experiment
(the experiment's analysis)."""
from __future__ import annotations

import math

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ember.errors import InputError
from ember.serve.models import NotFound

router = APIRouter()


class Feedback(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    value: float = Field(description="1/0 for a click or conversion, any number for a reward")
    type: str | None = Field(None, max_length=64)


@router.post("/v2/feedback")
async def feedback(body: Feedback, request: Request):
    srv = request.app.state.server
    if not math.isfinite(body.value):
        raise InputError("[feedback] value must be a finite number")
    try:
        return srv.production.feedback(body.request_id, body.value)
    except KeyError:
        raise NotFound(f"[feedback] unknown request id {body.request_id!r} (too old, or never "
                       "served here)") from None


@router.get("/v2/models/{name}/drift")
async def drift(name: str, request: Request, version: str | None = None, histograms: int = 0):
    srv = request.app.state.server
    servable = srv.resolve(name, version)
    if servable.monitor is None:
        raise NotFound(f"[monitor] model {name!r} version {servable.version} has no [monitor] "
                       "section in its config.toml")
    import asyncio
    report = await asyncio.to_thread(servable.monitor.report, histograms=bool(histograms))
    return dict(report, model=name, version=str(servable.version))


@router.get("/v2/models/{name}/experiment")
async def experiment(name: str, request: Request):
    srv = request.app.state.server
    exp = srv.production.experiments.get(name)
    if exp is None:
        if name not in srv.manager.names():
            raise NotFound(f"[serve] unknown model {name!r}")
        raise NotFound(f"[experiments] model {name!r} has no [experiment] section")
    return dict(exp.report(), model=name, weights=exp.current_weights())
