"""The live parts of a page, fetched again on live events, re-drawn only when they changed.

A live event says that something about a migration changed, not what: the page fetches
its part again, and swapping in the same HTML would still replace every element under
the operator's pointer (a click whose press and release straddle the swap is lost, an
open form closes). So each fragment ends with a digest of itself, the page sends it back
with its next fetch, and an unchanged fragment answers 204, which htmx does not swap.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup

SHOWN = "shown"  # the query parameter: the digest of the fragment the page shows
INCLUDE = f"input[name={SHOWN}]"  # how a page's hx-include finds it


def fragment(template: str, **context: Any) -> tuple[Markup, str]:
    """``template`` rendered, ending with the hidden input that holds its digest; the digest."""
    html = render_template(template, **context)
    digest = hashlib.blake2b(html.encode("utf-8"), digest_size=12).hexdigest()
    shown = Markup('<input type="hidden" name="{}" value="{}">').format(SHOWN, digest)
    return Markup(html) + shown, digest


def refreshed(template: str, **context: Any) -> ResponseReturnValue:
    """The fragment for a page's live fetch: 204 when the page already shows it."""
    html, digest = fragment(template, **context)
    if request.args.get(SHOWN) == digest:
        return "", 204
    return html
