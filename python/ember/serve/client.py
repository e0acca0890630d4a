"""The CLI side of a running `ember serve`: one JSON call (ember rollback, ember monitor report,
ember experiment report), with the server's error, not a traceback, when it fails."""
from __future__ import annotations

from ember.errors import EmberError


def request_json(method: str, url: str, *, area: str, api_key: str | None = None,
                 timeout: float = 30.0, transport=None) -> dict:
    """-> the JSON reply of a 200; EmberError("[area] METHOD url: ...") for anything else.
    transport: an httpx transport (tests pass httpx.MockTransport)."""
    import httpx
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            r = client.request(method, url, headers=headers)
    except httpx.HTTPError as e:
        raise EmberError(f"[{area}] {method} {url}: cannot reach the server: "
                         f"{type(e).__name__}: {e}") from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        msg = body.get("error", body) if isinstance(body, dict) else r.text[:300]
        raise EmberError(f"[{area}] {method} {url}: HTTP {r.status_code}: {msg}")
    if not isinstance(body, dict):
        raise EmberError(f"[{area}] {method} {url}: the reply is not a JSON object")
    return body
