"""Serve Gradio's page without anything from outside the machine.

Gradio 4's page template links a CDN script (iframe-resizer), preconnects to Google Fonts and
carries Gradio's own social-card tags. This ASGI middleware removes every tag of an HTML
response that points off the machine, so the page renders completely with no network.
"""
from __future__ import annotations

import re

_OFFSITE_TAG = re.compile(
    r"""<(?:link|script)\b[^>]*?\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^>]*>(?:\s*</script>)?"""
    r"""|<meta\b[^>]*?(?:og:url|twitter:creator)[^>]*>""",
    re.IGNORECASE | re.DOTALL,
)


def strip_offsite(html: str) -> str:
    return _OFFSITE_TAG.sub("", html)


class OfflinePage:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if not headers.get(b"content-type", b"").startswith(b"text/html"):
                    start["pass"] = True
                    return await send(message)
                start["msg"] = message
                return None
            if start.get("pass"):
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            body = strip_offsite(b"".join(chunks).decode("utf-8")).encode("utf-8")
            msg = start["msg"]
            headers = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**msg, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
