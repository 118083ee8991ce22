"""Reading a model answer, from either API, into one neutral `ModelReply`.

Only this module knows the response shapes of the Responses API and Chat Completions. It does
not judge: the agent decides what a refusal, a truncation or a failed status means.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from extraction_pipeline.core.model.costs import TokenUsage


@dataclass(frozen=True)
class ModelReply:
    """The parts of an answer the agent acts on."""

    text: str
    usage: TokenUsage
    model: str
    request_id: str | None
    refusal: str | None = None
    truncated: str | None = None  # why the output stopped early, e.g. "max_output_tokens"
    content_filtered: bool = False
    failed: str | None = None  # the provider's message when it reports the response as failed


def reply_from_response(response: Response) -> ModelReply:
    """Interpret a Responses API `Response` (checks `status` first: `parse` does not)."""
    usage = TokenUsage()
    if response.usage is not None:
        details = response.usage.input_tokens_details
        usage = TokenUsage(
            input_tokens=response.usage.input_tokens,
            cached_input_tokens=(details.cached_tokens or 0) if details is not None else 0,
            output_tokens=response.usage.output_tokens,
        )
    refusals = [
        part.refusal
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "refusal"
    ]
    reason = response.incomplete_details.reason if response.incomplete_details else None
    incomplete = response.status == "incomplete"
    failed = None
    if response.status == "failed":
        failed = response.error.message if response.error is not None else "response failed"
    return ModelReply(
        text=response.output_text,
        usage=usage,
        model=response.model,
        request_id=getattr(response, "_request_id", None),  # set by the SDK on what it fetched
        refusal="; ".join(refusals) if refusals else None,
        truncated=(reason or "incomplete") if incomplete and reason != "content_filter" else None,
        content_filtered=incomplete and reason == "content_filter",
        failed=failed,
    )


def reply_from_body(api_mode: str, body: dict[str, object], request_id: str | None) -> ModelReply:
    """Interpret an answer received as JSON (a batch output line's body) like an online one."""
    if api_mode == "responses":
        reply = reply_from_response(Response.model_validate(body))
    else:
        reply = reply_from_chat(ChatCompletion.model_validate(body))
    return replace(reply, request_id=request_id or reply.request_id)


def reply_from_chat(completion: ChatCompletion) -> ModelReply:
    """Interpret a Chat Completions answer (first choice)."""
    usage = TokenUsage()
    if completion.usage is not None:
        details = completion.usage.prompt_tokens_details
        usage = TokenUsage(
            input_tokens=completion.usage.prompt_tokens,
            cached_input_tokens=(details.cached_tokens or 0) if details is not None else 0,
            output_tokens=completion.usage.completion_tokens,
        )
    if not completion.choices:
        return ModelReply(
            text="",
            usage=usage,
            model=completion.model,
            request_id=getattr(completion, "_request_id", None),
            failed="the answer has no choices",
        )
    choice = completion.choices[0]
    return ModelReply(
        text=choice.message.content or "",
        usage=usage,
        model=completion.model,
        request_id=getattr(completion, "_request_id", None),
        refusal=choice.message.refusal or None,
        truncated="length" if choice.finish_reason == "length" else None,
        content_filtered=choice.finish_reason == "content_filter",
    )
