"""The API's blueprints, one per resource, and the URL converters they share."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import BaseConverter


class IdConverter(BaseConverter):
    """A path segment that can name something: no NUL, which no id holds and PostgreSQL
    refuses in a query (the driver raises before the database can say "not found")."""

    regex = "[^/\x00]+"


def register_converters(app: Flask) -> None:
    app.url_map.converters["id"] = IdConverter
