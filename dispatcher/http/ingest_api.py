"""`POST /api/v1/ingest/cpanel` (SPEC §8a): the bridge from cPanel, so that WHM's own "Post to URL" feeds the daemon.

WHM posts one form per notification (`application/x-www-form-urlencoded; charset=UTF-8`) with the fields `subject`,
`body`, `application`, `event_name` and `hostname`, and moves the query string of the URL it is given into that form.
It cannot send headers, so the API token comes as the parameter `token`: in the form (where WHM puts the URL's
`?token=…`), in the query string (a client that keeps the URL as it is), or as the usual `Authorization: Bearer`
header. The one given is compared in constant time; it is never logged, stored or echoed.

The form becomes the event `{application}/{event_name}` with host `hostname` and account `account` (WHM sends none;
dispatcher's own Post to URL channel does); `data` holds every other field: `subject`, `body` and the URL's other
parameters, with the query's values under the form's. `data._bridge` (reserved) is set to `cpanel`: `render.py`
then writes the message from cPanel's subject and body (`templates/Bridge/cPanel.*`) in our layout, whatever the
type, while its importance, recipients and routes come from the type like any event's (an unknown type is
`Application/base`, low). The event is validated by the shared `parse_event`, so the limits of the bus and of
`POST /api/v1/events` hold: a body over 256 KiB, an `application` or `event_name` outside `[A-Za-z0-9_.-]`, a
control character or more than 255 characters in `hostname` or `account`, a lone surrogate: 400.
"""

from __future__ import annotations

import hmac
import logging

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiMapping

from ..config import Secret
from ..errors import StoreError
from ..events import MAX_PAYLOAD_BYTES, InvalidEvent, parse_event
from ..render import BRIDGE_KEY
from .base import DISPATCHER, UnreadableBody, json_error, read_form

log = structlog.get_logger(__name__)

CPANEL_PATH = "/api/v1/ingest/cpanel"
TOKEN_PARAMETER = "token"
# The two halves of the event type: required.
TYPE_FIELDS = ("application", "event_name")
# Form fields that make the event itself rather than its data.
EVENT_FIELDS = (*TYPE_FIELDS, "hostname", "account")


def _last(values: MultiMapping[str], name: str) -> str | None:
    """The last value of a repeated name, as `base.read_form` takes it (PHP's rule); None if absent."""
    found = values.getall(name, [])
    return found[-1] if found else None


def token_matches(expected: Secret | None, given: str) -> bool:
    """Whether `given` is the API token, compared in constant time as `server.require_token` compares the bearer
    token; surrounding whitespace is not part of it (`curl --data-urlencode token@FILE` sends the file's newline)."""
    if expected is None or not given.strip():
        return False
    # surrogatepass: any string encodes (a lone surrogate from a hostile form too), and such a one compares unequal.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), expected.reveal().encode("utf-8"))


def unauthorized(expected: Secret | None) -> web.Response:
    """The 401 of every protected route (as `server.require_token` answers), saying where this route takes the token."""
    return web.json_response(
        {
            "error": "missing or wrong token (Authorization: Bearer, or the parameter token)"
            if expected is not None
            else "the API is disabled: no http.token_file configured"
        },
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="dispatcher"'},
    )


def _header_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header; "" for a header of another scheme (never a match)."""
    given = request.headers.get("Authorization")
    if given is None:
        return None
    scheme, _, credentials = given.partition(" ")
    return credentials if scheme.lower() == "bearer" else ""


async def post_cpanel(request: web.Request) -> web.Response:
    """202 `{"id": …}` once the event is durably recorded; 401 without the right token, whatever else is wrong; 400
    `{"error", "details"}` for a form that is not an acceptable event (counted and logged as `event_rejected`, as on
    the events route); 503 if the store could not record it.

    The token is looked for in the header, then the query string, then the form, and the first place that has
    one decides: the form is read only once neither of the others gave a token, or once the one given matched.
    """
    dispatcher = request.app[DISPATCHER]
    expected = dispatcher.config.http.token
    given = _header_token(request)
    if given is None:
        given = _last(request.query, TOKEN_PARAMETER)
    if given is not None and not token_matches(expected, given):
        return unauthorized(expected)
    try:
        body = await request.read()
        form = await read_form(request)
    except UnreadableBody as err:
        if given is None:  # nobody we know: nothing to say about the body
            return unauthorized(expected)
        dispatcher.record_rejection("http", "invalid_json", str(err), topic=None)
        return json_error(400, str(err))
    # The token never becomes data, wherever it came from.
    form_token = form.pop(TOKEN_PARAMETER, None)
    if given is None and (form_token is None or not token_matches(expected, form_token)):
        return unauthorized(expected)

    try:
        if len(body) + len(request.query_string) > MAX_PAYLOAD_BYTES:
            raise InvalidEvent(
                "too_large", f"the form is {len(body)} bytes (with its query); the limit is {MAX_PAYLOAD_BYTES}"
            )
        fields = {name: _last(request.query, name) or "" for name in request.query if name != TOKEN_PARAMETER}
        fields.update(form)
        missing = [name for name in TYPE_FIELDS if not fields.get(name, "").strip()]
        if missing:
            raise InvalidEvent(
                "missing_type",
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: the event type is "
                "{application}/{event_name}",
                [f"{name}: required (WHM's Post to URL sends it)" for name in missing],
            )
        application, event_name, hostname, account = (fields.pop(name, "") for name in EVENT_FIELDS)
        event = parse_event(
            {
                "type": f"{application}/{event_name}",
                "host": hostname or None,
                "account": account or None,
                "data": {**fields, BRIDGE_KEY: "cpanel"},
            },
            topic_type=None,
            default_host=dispatcher.config.hostname,
        )
    except InvalidEvent as err:
        dispatcher.record_rejection("http", err.reason, str(err), topic=None)
        return json_error(400, str(err), err.details)
    try:
        await dispatcher.accept([event], source="http")
    except StoreError as err:
        log.error("event_not_recorded", event_id=event.id, event_type=event.type, error=str(err))
        return json_error(503, "the event could not be recorded; try again", [str(err)])
    return web.json_response({"id": event.id}, status=202)


class WithoutRequestBytes(logging.Filter):
    """aiohttp logs a request it cannot parse (`Error handling request`, at ERROR, with a traceback) with the parser's
    message, which quotes the bytes around the fault: the request line with its query string, `?token=…` included,
    or a header line such as `Authorization`. Such a record keeps the parser's reason, without what it quotes, and
    the kind of error, loses its traceback, and becomes a warning (the client's fault, not ours); other records pass
    unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            # "Invalid char in url query:\n\n  b'POST /…?token=…'\n  ^" → "Invalid char in url query"
            reason = error.message.strip().split("\n", 1)[0].split(":", 1)[0][:80]
            record.msg = "Error handling request from %s: %s (%s, %s)"
            record.args = (_first_arg(record), reason, type(error).__name__, error.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def _first_arg(record: logging.LogRecord) -> object:
    """The peer aiohttp names as the first argument of its `Error handling request from %s`."""
    return record.args[0] if isinstance(record.args, tuple) and record.args else "?"


def setup(app: web.Application) -> None:
    app.router.add_post(CPANEL_PATH, post_cpanel)
    # This route invites a token in the URL, and aiohttp's server logger would print a malformed request's line.
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, WithoutRequestBytes) for existing in server_logger.filters):
        server_logger.addFilter(WithoutRequestBytes())
