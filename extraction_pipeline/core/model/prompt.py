"""What the agent sends: instructions, the document in the chosen input shape, the repair turn.

The document is first turned into API-neutral `PromptPart`s, then rendered into the message
shapes of the Responses API or Chat Completions. Wire payloads are plain JSON-ready dicts: they
leave the core here, at the boundary, and nothing else inspects them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from extraction_pipeline.core.model.types import ApiMode, DocumentInput, InputMode, SentInputMode

FINGERPRINT_CHARS = 16

JsonDict = dict[str, Any]

INSTRUCTIONS = """\
You extract structured data from business documents.
Answer with one JSON object that matches the given JSON schema exactly.
Copy values as printed; never guess or compute a value the document does not show: use null.
Dates as ISO 8601 (YYYY-MM-DD). Currency as an ISO 4217 code (EUR, USD, ...).
Amounts and quantities as plain numbers: no currency symbols, no thousands separators.
Keep table rows in document order."""

REPAIR_TEMPLATE = """\
Your previous answer was rejected: {problem}
Answer again with only the corrected JSON object that matches the schema."""

# Rough token costs used only for the up-front rate-limit estimate.
CHARS_PER_TOKEN = 4
TOKENS_PER_PAGE_IMAGE = 1_100
MAX_PROBLEM_CHARS = 2_000


@dataclass(frozen=True)
class PromptPart:
    """One piece of the user turn: text, the PDF file, or one rendered page image (PNG)."""

    kind: Literal["text", "pdf", "image"]
    text: str = ""
    data: bytes = b""
    file_name: str = ""


@dataclass(frozen=True)
class Turn:
    """A later turn of the conversation (the repair round): role and plain text."""

    role: Literal["assistant", "user"]
    text: str


def resolve_input_mode(mode: InputMode, document: DocumentInput) -> SentInputMode:
    """ "auto" means the text layer when there is one, the PDF file itself otherwise."""
    if mode == "auto":
        return "text" if document.has_text_layer else "pdf"
    return mode


def document_parts(
    document: DocumentInput, mode: SentInputMode, schema_name: str, page_images: tuple[bytes, ...]
) -> tuple[PromptPart, ...]:
    """The user turn for `document` in the given input mode."""
    task = PromptPart("text", text=f"Extract the {schema_name} from the document.")
    header = f"Document file name: {document.file_name}"
    if mode == "text":
        return (PromptPart("text", text=f"{header}\n\n{_joined_pages(document.page_texts)}"), task)
    if mode == "pdf":
        pdf = PromptPart("pdf", data=document.pdf_bytes, file_name=document.file_name)
        return (PromptPart("text", text=header), pdf, task)
    images = tuple(PromptPart("image", data=png) for png in page_images)
    return (PromptPart("text", text=header), *images, task)


def _joined_pages(page_texts: tuple[str, ...]) -> str:
    if len(page_texts) <= 1:
        return "".join(page_texts)
    return "\n\n".join(
        f"--- page {number} ---\n{text}" for number, text in enumerate(page_texts, start=1)
    )


def repair_turns(previous_answer: str, problem: str) -> tuple[Turn, Turn]:
    """The assistant's rejected answer and the user's request to correct it."""
    trimmed = problem if len(problem) <= MAX_PROBLEM_CHARS else problem[:MAX_PROBLEM_CHARS] + "..."
    return Turn("assistant", previous_answer), Turn("user", REPAIR_TEMPLATE.format(problem=trimmed))


def estimate_tokens(
    parts: tuple[PromptPart, ...],
    schema_json: str,
    document: DocumentInput,
    max_output_tokens: int,
) -> int:
    """Upper-bound guess of the tokens a call will be charged, for the TPM limiter."""
    chars = len(INSTRUCTIONS) + len(schema_json)
    pages = 0
    for part in parts:
        chars += len(part.text)
        if part.kind == "image":
            pages += 1
        elif part.kind == "pdf":
            # The API sends a PDF as its extracted text plus one image per page.
            pages += max(len(document.page_texts), 1)
            chars += sum(len(text) for text in document.page_texts)
    return chars // CHARS_PER_TOKEN + pages * TOKENS_PER_PAGE_IMAGE + max_output_tokens


def responses_input(parts: tuple[PromptPart, ...], turns: tuple[Turn, ...]) -> list[JsonDict]:
    """`input` of a Responses API call."""
    content: list[JsonDict] = []
    for part in parts:
        if part.kind == "text":
            content.append({"type": "input_text", "text": part.text})
        elif part.kind == "pdf":
            content.append(
                {"type": "input_file", "filename": part.file_name, "file_data": _pdf_url(part)}
            )
        else:
            content.append({"type": "input_image", "image_url": _png_url(part), "detail": "high"})
    items: list[JsonDict] = [{"role": "user", "content": content}]
    items.extend({"role": turn.role, "content": turn.text} for turn in turns)
    return items


def chat_messages(parts: tuple[PromptPart, ...], turns: tuple[Turn, ...]) -> list[JsonDict]:
    """`messages` of a Chat Completions call, system message first."""
    content: list[JsonDict] = []
    for part in parts:
        if part.kind == "text":
            content.append({"type": "text", "text": part.text})
        elif part.kind == "pdf":
            file = {"filename": part.file_name, "file_data": _pdf_url(part)}
            content.append({"type": "file", "file": file})
        else:
            image = {"url": _png_url(part), "detail": "high"}
            content.append({"type": "image_url", "image_url": image})
    messages: list[JsonDict] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": content},
    ]
    messages.extend({"role": turn.role, "content": turn.text} for turn in turns)
    return messages


def _pdf_url(part: PromptPart) -> str:
    return "data:application/pdf;base64," + base64.b64encode(part.data).decode("ascii")


def _png_url(part: PromptPart) -> str:
    return "data:image/png;base64," + base64.b64encode(part.data).decode("ascii")


@dataclass(frozen=True)
class OutputFormat:
    """The strict JSON-schema output format of one model class, computed once and reused."""

    schema_name: str
    schema: JsonDict
    schema_json: str

    def for_api(self, api_mode: ApiMode) -> JsonDict:
        """`text.format` (Responses) or `response_format` (Chat Completions)."""
        if api_mode == "responses":
            return {
                "type": "json_schema",
                "name": self.schema_name,
                "strict": True,
                "schema": self.schema,
            }
        return {
            "type": "json_schema",
            "json_schema": {"name": self.schema_name, "strict": True, "schema": self.schema},
        }


def output_format(model: type[BaseModel]) -> OutputFormat:
    """Build the strict schema the SDK's `parse` helpers would send, without their per-call cost."""
    # Private SDK helper, but the exact transformation `responses.parse` applies (openai<4 pinned).
    from openai.lib._pydantic import to_strict_json_schema

    schema = to_strict_json_schema(model)
    return OutputFormat(
        schema_name=model.__name__,
        schema=schema,
        schema_json=json.dumps(schema, separators=(",", ":")),
    )


def schema_fingerprint(model: type[BaseModel]) -> str:
    """A short, stable hash of the model's name and JSON schema.

    Changes whenever anything the model sees changes (fields, types, descriptions), so it can key
    caches together with the document hash, model name and prompt version.
    """
    document = {"name": model.__name__, "schema": model.model_json_schema()}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]
