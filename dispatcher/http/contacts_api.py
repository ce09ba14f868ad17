"""The native REST API for contacts (SPEC §7), JSON in and out.

Status codes: 200 read or changed, 201 created (with `Location`), 204 deleted, 400 a body that is not a JSON
object (empty, not UTF-8, not JSON, or refused by the untrusted-JSON decoder: NaN, a number out of range, nesting
deeper than 32, a lone surrogate), 404 no such client or contact, 409 a conflict with what is stored (duplicate
email, id or account, the ICANN rule), 413 a body over 1 MiB (aiohttp's own answer), 422 fields that are unknown
or malformed. Errors are `{"error": …, "details": ["field: problem"]}`, bad values quoted cut short.

    GET|PUT  /api/v1/accounts/{account}/contact-info
    POST     /api/v1/clients                      GET|PATCH /api/v1/clients/{id}
    GET|POST /api/v1/clients/{id}/contacts
    GET|PATCH|DELETE /api/v1/contacts/{id}

(PATCH of a client is an addition to SPEC §7: it changes the primary holder's email, names, preferences or
accounts under the same rules as contacts.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ..contacts import accounts, clients
from ..contacts.model import (
    CLIENT_NOT_FOUND,
    CONTACT_NOT_FOUND,
    ContactsError,
    NotFound,
    parse_id,
    validate_client_fields,
    validate_contact_fields,
)
from ..untrusted_json import quote
from .base import DISPATCHER, UnreadableBody, json_error, read_json

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadBody(Exception):
    """The request body is not a JSON object."""


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (decoded by `base.read_json`), or `BadBody` saying why not."""
    try:
        body = await read_json(request)
    except UnreadableBody as err:
        raise BadBody(str(err)) from None
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object")
    return body


def _path_id(request: web.Request, kind: str) -> int:
    """The `{id}` of the path; one that is not an id (`model.parse_id`) names nothing, so it is not found."""
    text = request.match_info["id"]
    number = parse_id(text)
    if number is None:
        message = CLIENT_NOT_FOUND if kind == "client" else CONTACT_NOT_FOUND
        raise NotFound(message, [f"id: {quote(text)} is not a {kind} id"])
    return number


def _answering(handler: Handler) -> Handler:
    """Turn the contact store's refusals and bad bodies into the API's JSON errors."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadBody as err:
            return json_error(400, str(err))
        except ContactsError as err:
            return json_error(err.status, str(err) if err.status != 422 else "invalid input", err.details)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# -- account contact info ----------------------------------------------------------------------------------------


@_answering
async def get_contact_info(request: web.Request) -> web.Response:
    """The account's savecontactinfo fields (defaults if never saved); the token masked."""
    info = await accounts.get_contact_info(request.app[DISPATCHER].store, request.match_info["account"])
    return web.json_response(info.public_view())


@_answering
async def put_contact_info(request: web.Request) -> web.Response:
    """Change only the fields given; answer with every field. `account` in the body must match the path."""
    account = request.match_info["account"]
    body = await json_object(request)
    if "account" in body:
        if body.pop("account") != account:
            return json_error(422, "invalid input", ["account: does not match the account in the path"])
    info = await accounts.update_contact_info(request.app[DISPATCHER], account, body, ip=request.remote)
    return web.json_response(info.public_view())


# -- clients -----------------------------------------------------------------------------------------------------


@_answering
async def post_client(request: web.Request) -> web.Response:
    """Create a client: 201 with it and its `Location`."""
    fields = validate_client_fields(await json_object(request), creating=True)
    client = await clients.create_client(request.app[DISPATCHER].store, fields)
    return web.json_response(client.public_view(), status=201, headers={"Location": f"/api/v1/clients/{client.id}"})


@_answering
async def get_client(request: web.Request) -> web.Response:
    client = await clients.get_client(request.app[DISPATCHER].store, _path_id(request, "client"))
    return web.json_response(client.public_view())


@_answering
async def patch_client(request: web.Request) -> web.Response:
    """Change the given fields of a client (not its id)."""
    client_id = _path_id(request, "client")
    fields = validate_client_fields(await json_object(request), creating=False)
    client = await clients.update_client(request.app[DISPATCHER].store, client_id, fields)
    return web.json_response(client.public_view())


@_answering
async def get_client_contacts(request: web.Request) -> web.Response:
    contacts = await clients.list_client_contacts(request.app[DISPATCHER].store, _path_id(request, "client"))
    return web.json_response({"contacts": [contact.public_view() for contact in contacts]})


@_answering
async def post_client_contact(request: web.Request) -> web.Response:
    """Add a contact to the client: 201 with it and its `Location`."""
    client_id = _path_id(request, "client")
    fields = validate_contact_fields(await json_object(request))
    contact = await clients.add_contact(request.app[DISPATCHER].store, client_id, fields)
    return web.json_response(contact.public_view(), status=201, headers={"Location": f"/api/v1/contacts/{contact.id}"})


# -- contacts ----------------------------------------------------------------------------------------------------


@_answering
async def get_contact(request: web.Request) -> web.Response:
    contact = await clients.get_contact(request.app[DISPATCHER].store, _path_id(request, "contact"))
    return web.json_response(contact.public_view())


@_answering
async def patch_contact(request: web.Request) -> web.Response:
    """Change the given fields of a contact."""
    contact_id = _path_id(request, "contact")
    fields = validate_contact_fields(await json_object(request))
    contact = await clients.update_contact(request.app[DISPATCHER].store, contact_id, fields)
    return web.json_response(contact.public_view())


@_answering
async def delete_contact(request: web.Request) -> web.Response:
    await clients.delete_contact(request.app[DISPATCHER].store, _path_id(request, "contact"))
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/accounts/{account}/contact-info", get_contact_info)
    app.router.add_put("/api/v1/accounts/{account}/contact-info", put_contact_info)
    app.router.add_post("/api/v1/clients", post_client)
    app.router.add_get("/api/v1/clients/{id}", get_client)
    app.router.add_patch("/api/v1/clients/{id}", patch_client)
    app.router.add_get("/api/v1/clients/{id}/contacts", get_client_contacts)
    app.router.add_post("/api/v1/clients/{id}/contacts", post_client_contact)
    app.router.add_get("/api/v1/contacts/{id}", get_contact)
    app.router.add_patch("/api/v1/contacts/{id}", patch_contact)
    app.router.add_delete("/api/v1/contacts/{id}", delete_contact)
