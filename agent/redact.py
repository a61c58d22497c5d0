"""Passwords inside URLs (``http://user:pass@host/``) never leave the process.

A start URL may carry credentials; the agent needs them to load the page, but nobody reading
the retained status, an event, a response, Home Assistant or a log line should see them. The
edges that publish or write text run it through ``redact_url``: MQTT payloads
(``agent.transport.base.encode``), webhook answers and every log sink.
"""

from __future__ import annotations

import re
from typing import overload

MASK = "***"

# scheme://user:password@ — the password runs to the last "@" before the path (as urlsplit
# reads it). Quotes, backslashes, "<>" and whitespace end a URL, so a match never runs out of
# a JSON string or a sentence.
_CREDENTIALS = re.compile(
    r"""(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s"'\\<>@:]*):[^/?#\s"'\\<>]*@"""
)


@overload
def redact_url(text: str) -> str: ...
@overload
def redact_url(text: None) -> None: ...
def redact_url(text: str | None) -> str | None:
    """``text`` (a URL, or any text with URLs in it) with each URL's password masked.

    The user name stays (it says whose credentials they are); a URL without a password is
    unchanged.
    """
    if text is None or "@" not in text:
        return text
    return _CREDENTIALS.sub(rf"\g<head>:{MASK}@", text)
