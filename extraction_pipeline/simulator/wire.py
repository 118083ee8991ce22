"""OpenAI wire format for the simulator: reading requests and building response bodies.

Bodies are the smallest that pass the real SDK with `_strict_response_validation=True`
(shared/notes/openai-sdk-3-facts.md, section 1), plus usage. Token counts are estimates
(characters / 4, a flat amount per page image), good enough to exercise cost accounting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import pypdfium2 as pdfium

from extraction_pipeline.core.documents.pdf import PDFIUM_LOCK
from extraction_pipeline.simulator.extract import fill_schema, read_invoice

Json = Any
CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 765
_PDF_PREFIX = "data:application/pdf;base64,"
# How the pipeline's prompt names the file (core/model/prompt.py); only a label for reports.
_FILE_NAME_LINE = "Document file name:"
_ids = itertools.count(1)


def new_id(prefix: str, taken: Container[str] = ()) -> str:
    """A fresh id, none of `taken` (ids loaded from a state dir: the counter restarts with the
    process, so a loaded id could otherwise come round again)."""
    while True:
        candidate = f"{prefix}_{next(_ids):06d}{int(time.time() * 1000) % 1_000_000:06d}"
        if candidate not in taken:
            return candidate


@dataclass
class ModelRequest:
    """What the simulator needs from a /v1/responses or /v1/chat/completions body."""

    model: str
    schema: dict[str, Json] | None
    schema_name: str
    document_text: str
    file_names: list[str] = field(default_factory=list)
    images: int = 0
    prompt_chars: int = 0
    # What the request is about: SHA-256 of its first user message (text, files, images), the
    # same for every retry and the repair round of one document, different for another one.
    document: str = ""
    document_name: str = ""  # the file name the request gives, if any
    instructions: str = ""  # the system side: `instructions`, system and developer messages

    @property
    def schema_sha256(self) -> str:
        """Fingerprint of the requested output schema ("" when none was asked for)."""
        if self.schema is None:
            return ""
        canonical = json.dumps(self.schema, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def instructions_sha256(self) -> str:
        return hashlib.sha256(self.instructions.encode()).hexdigest()

    @property
    def match_text(self) -> str:
        """Where fault rules and markers look: the document text and the file names."""
        return "\n".join([self.document_text, *self.file_names])


FileLookup = Callable[[str], bytes | None]


def parse_responses_request(body: dict[str, Json], files: FileLookup) -> ModelRequest:
    """Read a Responses API create body."""
    text_format = (body.get("text") or {}).get("format") or {}
    request = ModelRequest(
        model=str(body.get("model", "")),
        schema=text_format.get("schema") if text_format.get("type") == "json_schema" else None,
        schema_name=str(text_format.get("name", "output")),
        document_text="",
        prompt_chars=len(str(body.get("instructions") or "")),
        instructions=str(body.get("instructions") or ""),
    )
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    _read_messages(request, items or [], files)
    return request


def parse_chat_request(body: dict[str, Json], files: FileLookup) -> ModelRequest:
    """Read a Chat Completions create body."""
    response_format = body.get("response_format") or {}
    json_schema = response_format.get("json_schema") or {}
    request = ModelRequest(
        model=str(body.get("model", "")),
        schema=json_schema.get("schema") if response_format.get("type") == "json_schema" else None,
        schema_name=str(json_schema.get("name", "output")),
        document_text="",
    )
    _read_messages(request, body.get("messages") or [], files)
    return request


def _read_messages(request: ModelRequest, messages: list[Json], files: FileLookup) -> None:
    texts: list[str] = []
    first_user: Json = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            text = _read_part(request, part, files)
            request.prompt_chars += len(text)
            # The document is what the user sent; instructions and earlier answers are not.
            if message.get("role") == "user":
                texts.append(text)
            elif message.get("role") in ("system", "developer"):
                request.instructions = "\n".join(t for t in (request.instructions, text) if t)
        if message.get("role") == "user" and first_user is None:
            first_user = content
    request.document_text = "\n".join(t for t in texts if t)
    canonical = json.dumps(first_user, sort_keys=True, separators=(",", ":"))
    request.document = hashlib.sha256(canonical.encode()).hexdigest()
    request.document_name = request.file_names[0] if request.file_names else _named_file(texts)


def _named_file(texts: list[str]) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.startswith(_FILE_NAME_LINE):
                return line[len(_FILE_NAME_LINE) :].strip()
    return ""


def _read_part(request: ModelRequest, part: Json, files: FileLookup) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "text", "output_text"):
        return str(part.get("text", ""))
    if kind in ("input_file", "file"):
        spec = part.get("file", part) if kind == "file" else part
        request.file_names.append(str(spec.get("filename") or spec.get("file_id") or ""))
        data = _file_bytes(spec, files)
        return pdf_text(data) if data else ""
    if kind in ("input_image", "image_url"):
        request.images += 1
    return ""


def _file_bytes(spec: dict[str, Json], files: FileLookup) -> bytes | None:
    data_url = spec.get("file_data")
    if isinstance(data_url, str) and data_url.startswith(_PDF_PREFIX):
        try:
            return base64.b64decode(data_url[len(_PDF_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            return None
    file_id = spec.get("file_id")
    return files(file_id) if isinstance(file_id, str) else None


def pdf_text(data: bytes) -> str:
    """The text layer of a PDF, pages joined by newlines; empty for unreadable bytes."""
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return ""
        try:
            pages = []
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                pages.append(textpage.get_text_range().replace("\r\n", "\n"))
                textpage.close()
                page.close()
            return "\n".join(pages)
        finally:
            document.close()


def answer_json(request: ModelRequest) -> str:
    """The simulated model's answer: the schema filled from the document text."""
    if request.schema is None:
        return json.dumps(read_invoice(request.document_text))
    return json.dumps(fill_schema(request.schema, read_invoice(request.document_text)))


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    cached_tokens: int
    output_tokens: int


def usage_for(request: ModelRequest, output_text: str, cached_tokens: int) -> Usage:
    schema_chars = len(json.dumps(request.schema)) if request.schema else 0
    input_tokens = max(
        1,
        math.ceil((request.prompt_chars + schema_chars) / CHARS_PER_TOKEN)
        + request.images * TOKENS_PER_IMAGE,
    )
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=min(cached_tokens, input_tokens),
        output_tokens=max(1, math.ceil(len(output_text) / CHARS_PER_TOKEN)),
    )


def responses_body(
    request: ModelRequest,
    *,
    text: str | None,
    usage: Usage,
    refusal: str | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Json]:
    """A `Response` object: output text, or a refusal part; `incomplete` with a reason."""
    content: list[dict[str, Json]]
    if refusal is not None:
        content = [{"type": "refusal", "refusal": refusal}]
    else:
        content = [{"type": "output_text", "text": text or "", "annotations": []}]
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "model": request.model,
        "status": "incomplete" if incomplete_reason else "completed",
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "error": None,
        "output": [
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "incomplete" if incomplete_reason else "completed",
                "content": content,
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    }


def chat_body(
    request: ModelRequest,
    *,
    text: str | None,
    usage: Usage,
    refusal: str | None = None,
    finish_reason: str = "stop",
) -> dict[str, Json]:
    """A `ChatCompletion` object with one choice."""
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "logprobs": None,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Json]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
