"""The simulator's Starlette app: the OpenAI endpoints the pipeline uses, and `/_sim` controls.

Model endpoints: POST /v1/responses, POST /v1/chat/completions (non-streaming).
Files and Batch: POST /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel. Also GET /v1/models.
Controls: GET/POST /_sim/faults (replace the rule list), POST /_sim/settings (latency, fault
mix, seed, batch pacing and expiry, ...), GET /_sim/requests (request log, counts, peak
in-flight, what each document was billed, batch lines included; `?text=1` adds each request's
full document text), POST /_sim/reset (also forgets the files and batches of a state dir).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import time
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from extraction_pipeline.simulator.answers import SimAnswer, answer
from extraction_pipeline.simulator.config import SimulatorConfig, SimulatorSettings
from extraction_pipeline.simulator.faults import Endpoint, FaultRule, fault_mix
from extraction_pipeline.simulator.files import FILE_PURPOSES
from extraction_pipeline.simulator.state import CLIENT_CLOSED_REQUEST, SimulatorState
from extraction_pipeline.simulator.wire import error_body, new_id

_RULES = TypeAdapter(list[FaultRule])
_METADATA = TypeAdapter(dict[str, str] | None)
HANG_POLL_SECONDS = 0.05


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """A fresh simulator app with its own state (`app.state.simulator`): in memory, plus the
    files and batches of `config.state_dir` when it names one."""
    state = SimulatorState(config or SimulatorConfig())

    async def responses(request: Request) -> Response:
        return await _model_call(state, request, "responses")

    async def chat(request: Request) -> Response:
        return await _model_call(state, request, "chat")

    async def upload_file(request: Request) -> Response:
        fields = _multipart(await request.body(), request.headers.get("content-type", ""))
        upload, purpose = fields.get("file"), fields.get("purpose")
        if upload is None or purpose is None or purpose[1].decode() not in FILE_PURPOSES:
            return _error(400, "Multipart fields 'file' and a valid 'purpose' are required.")
        stored = state.files.add(upload[0] or "upload", purpose[1].decode(), upload[1])
        return JSONResponse(stored.to_json())

    async def get_file(request: Request) -> Response:
        stored = state.files.get(request.path_params["file_id"])
        return JSONResponse(stored.to_json()) if stored else _error(404, "No such file.")

    async def file_content(request: Request) -> Response:
        data = state.files.data(request.path_params["file_id"])
        if data is None:
            return _error(404, "No such file.")
        return Response(data, media_type="application/octet-stream")

    async def create_batch(request: Request) -> Response:
        body = await _json(request)
        if not isinstance(body, dict) or not body.get("input_file_id") or not body.get("endpoint"):
            return _error(400, "input_file_id and endpoint are required.")
        if body.get("completion_window", "24h") != "24h":
            return _error(400, "completion_window must be 24h.")
        try:
            metadata = _METADATA.validate_python(body.get("metadata"))
        except ValidationError:
            return _error(400, "metadata must map strings to strings.")
        batch = state.batches.create(str(body["input_file_id"]), str(body["endpoint"]), metadata)
        return JSONResponse(state.batches.to_json(batch))

    async def get_batch(request: Request) -> Response:
        batch = state.batches.get(request.path_params["batch_id"])
        return JSONResponse(state.batches.to_json(batch)) if batch else _error(404, "No batch.")

    async def cancel_batch(request: Request) -> Response:
        batch = state.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "No such batch.")
        state.batches.cancel(batch)
        return JSONResponse(state.batches.to_json(batch))

    async def list_batches(request: Request) -> Response:
        newest_first = state.batches.newest_first()
        after = request.query_params.get("after")
        if after:
            ids = [batch.id for batch in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query_params.get("limit", "20"))
        page = [state.batches.to_json(batch) for batch in newest_first[:limit]]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest_first) > limit,
            }
        )

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 1735689600, "owned_by": "simulator"}
            for name in state.config.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            payload = await _json(request)
            rules = payload.get("faults", []) if isinstance(payload, dict) else payload
            try:
                state.faults.replace(_RULES.validate_python(rules))
            except ValidationError as error:
                return _error(400, f"invalid fault rules: {error}")
            state.config = state.config.model_copy(update={"fault_mix": None})
        return JSONResponse({"faults": [rule.model_dump() for rule in state.faults.rules()]})

    async def settings(request: Request) -> Response:
        try:
            update = SimulatorSettings.model_validate(await _json(request))
        except ValidationError as error:
            return _error(400, f"invalid settings: {error}")
        changes = update.model_dump(exclude_none=True)
        state.config = state.config.model_copy(update=changes)
        if update.fault_mix is not None:
            state.faults.replace(fault_mix(update.fault_mix))
        if update.seed is not None:
            state.reseed(update.seed)
        return JSONResponse(state.config.model_dump(exclude={"faults"}))

    async def requests_log(request: Request) -> Response:
        with_text = request.query_params.get("text") in ("1", "true")
        return JSONResponse(state.request_report(with_text=with_text))

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    app = Starlette(
        routes=[
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/files", upload_file, methods=["POST"]),
            Route("/v1/files/{file_id}", get_file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
            Route("/v1/batches", create_batch, methods=["POST"]),
            Route("/v1/batches", list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_sim/faults", faults, methods=["GET", "POST"]),
            Route("/_sim/settings", settings, methods=["POST"]),
            Route("/_sim/requests", requests_log, methods=["GET"]),
            Route("/_sim/reset", reset, methods=["POST"]),
        ]
    )
    app.state.simulator = state
    return app


async def _model_call(state: SimulatorState, request: Request, endpoint: Endpoint) -> Response:
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return _error(401, "Missing bearer token.", "invalid_request_error", "invalid_api_key")
    body = await _json(request)
    if not isinstance(body, dict) or not body.get("model"):
        return _error(400, "A JSON body with 'model' is required.")
    if body.get("stream"):
        return _error(400, "The simulator does not stream.")
    parsed = state.parse(endpoint, body)
    entry = state.start(endpoint, parsed, request.headers.get("x-stainless-retry-count"))
    sim: SimAnswer | None = None
    client_gone = False
    try:
        fault = state.faults.decide(parsed.match_text, endpoint, parsed.document)
        entry.fault = fault.kind if fault else None
        await asyncio.sleep(state.latency())
        if fault is not None and fault.kind == "hang":
            if not await _hang(request, fault.hang_seconds):
                # A stuck upstream produced nothing: nothing to answer, nothing billed.
                client_gone = True
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            fault = None
        sim = answer(parsed, endpoint, fault, state.config.cached_input_tokens)
        # The model did the work either way; the ledger tells answers nobody received apart.
        client_gone = await request.is_disconnected()
        return _send(sim)
    finally:
        state.finish(entry, sim, client_gone=client_gone)


async def _hang(request: Request, seconds: float) -> bool:
    """Sleep like a stuck upstream, but stop as soon as the client gives up (then False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(HANG_POLL_SECONDS)
    return True


def _send(sim: SimAnswer) -> Response:
    headers = {"x-request-id": new_id("req"), **sim.headers}
    return JSONResponse(sim.body, status_code=sim.status_code, headers=headers)


def _error(
    status: int, message: str, error_type: str = "invalid_request_error", code: str | None = None
) -> Response:
    headers = {"x-request-id": new_id("req")}
    return JSONResponse(error_body(message, error_type, code), status_code=status, headers=headers)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except json.JSONDecodeError:
        return None


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (file name, bytes). Stdlib only."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields
