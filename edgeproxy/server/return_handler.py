"""Handlers that answer on their own: `return:`, and the 404 of an unmatched path."""

from __future__ import annotations

from typing import Final

from edgeproxy.config.model import ReturnAction
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.response import Answer

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


class AnswerHandler:
    """Always the same complete response, built once."""

    __slots__ = ("answer",)

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def start(self, request: Request, client: Client) -> Responder | None:
        client.out.send_answer(self.answer)
        return None


def return_answer(action: ReturnAction) -> Answer:
    headers = []
    if action.location is not None:
        headers.append((b"location", action.location.encode()))
    if action.body:
        headers.append(_TEXT)
    return Answer(action.status, headers, action.body)
