"""What account contact info, clients and contacts are, and the validation every dialect shares.

The account fields and their defaults and descriptions are cPanel's `CustInfo::savecontactinfo`
(seed 000); the client and contact fields, email categories and sub-account permissions are WHMCS's
`AddContact`/`UpdateContact` (seeds 002 and 003). The REST, cPanel and WHMCS front ends turn their
own parameter spelling into the plain mappings these validators take, so a value is judged the same
way whichever door it came through.

Every problem names the field and quotes the bad value cut to about 40 characters (`untrusted_json.quote`), so
an error answer or log line stays short whatever was sent; a token is never quoted. An `InvalidInput` lists at
most `MAX_PROBLEMS` problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import DispatcherError
from ..untrusted_json import find_fault, quote
from .countries import ISO_3166_ALPHA2

# -- errors ------------------------------------------------------------------------------------------------------

# WHMCS's own words (seeds 002/003): the WHMCS dialect answers with exactly these.
CLIENT_NOT_FOUND = "Client ID Not Found"
CONTACT_NOT_FOUND = "Contact ID Not Found"
DUPLICATE_EMAIL = "Duplicate Email Address"
ICANN_RULE = (
    "You must have at least one email address enabled to receive domain related notifications as required by ICANN. "
    "To disable domain notifications, please enable domain notifications for the primary account holder or another "
    "contact"
)


class ContactsError(DispatcherError):
    """Root of the contact store's refusals. `details` names each bad field as `field: problem`."""

    status = 400

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        self.details = list(details or [])
        super().__init__(message)


# How many problems an `InvalidInput` lists; a body with thousands of bad fields gets the first ones and a count.
MAX_PROBLEMS = 20


class InvalidInput(ContactsError):
    """Some fields are missing, unknown or malformed (HTTP 422). At most `MAX_PROBLEMS` are kept, the last line
    then saying how many more there were."""

    status = 422

    def __init__(self, details: list[str]) -> None:
        if len(details) > MAX_PROBLEMS:
            details = [*details[: MAX_PROBLEMS - 1], f"… and {len(details) - MAX_PROBLEMS + 1} more problems"]
        super().__init__("invalid input: " + "; ".join(details), details)


class NotFound(ContactsError):
    """The client or contact does not exist (HTTP 404); the message is WHMCS's."""

    status = 404


class Conflict(ContactsError):
    """The change collides with what is stored: a duplicate email or id, an account owned elsewhere, the ICANN rule
    (HTTP 409)."""

    status = 409


# -- account contact info (cPanel) -------------------------------------------------------------------------------

FieldKind = Literal["string", "boolean"]


@dataclass(frozen=True, slots=True)
class AccountField:
    """One `savecontactinfo` setting: its name, kind, documented default and the `descp` cPanel returns."""

    name: str
    kind: FieldKind
    default: str | bool
    descp: str
    secret: bool = False


# In the order of the seed's `cpanelresult` output; the two-factor pair, a documented parameter the example
# output leaves out, is placed after the other guarded pairs (its descriptions are cPanel's).
ACCOUNT_FIELDS: tuple[AccountField, ...] = (
    AccountField(
        "email",
        "string",
        "",
        "Enter an email address to receive account notifications and password reset confirmations. "
        "Do not use an email address that your cPanel account owns.",
    ),
    AccountField(
        "second_email",
        "string",
        "",
        "Enter a second email address to receive account notifications and password reset confirmations.",
    ),
    AccountField("pushbullet_access_token", "string", "", "An access token for Pushbullet.", secret=True),
    AccountField("notify_contact_address_change", "boolean", True, "My contact email address changes."),
    AccountField(
        "notify_contact_address_change_notification_disabled",
        "boolean",
        True,
        "My preference for contact email address change notifications is disabled.",
    ),
    AccountField("notify_disk_limit", "boolean", True, "My account approaches its disk quota."),
    AccountField("notify_bandwidth_limit", "boolean", True, "My account approaches its bandwidth usage limit."),
    AccountField(
        "notify_email_quota_limit", "boolean", True, "Any of my account's email accounts approaches or is over quota."
    ),
    AccountField("notify_password_change", "boolean", True, "My account's password changes."),
    AccountField(
        "notify_password_change_notification_disabled",
        "boolean",
        True,
        "My preference for account password change notifications is disabled.",
    ),
    AccountField("notify_account_login", "boolean", True, "Someone logs in to my account."),
    AccountField(
        "notify_account_login_for_known_netblock",
        "boolean",
        True,
        "Send login notifications, even when the user logs in from an IP address range or netblock that contains "
        "an IP address from which a user successfully logged in previously.",
    ),
    AccountField(
        "notify_account_login_notification_disabled",
        "boolean",
        True,
        "My preference for successful login notifications is disabled.",
    ),
    AccountField(
        "notify_account_authn_link", "boolean", True, "An external account links to my account for authentication."
    ),
    AccountField(
        "notify_account_authn_link_notification_disabled",
        "boolean",
        True,
        "My preference for external account link notifications is disabled.",
    ),
    AccountField(
        "notify_twofactorauth_change", "boolean", True, "My account's two-factor authentication configuration changes."
    ),
    AccountField(
        "notify_twofactorauth_change_notification_disabled",
        "boolean",
        True,
        "My preference for two-factor authentication notifications is disabled.",
    ),
    AccountField("notify_autossl_renewal", "boolean", True, "AutoSSL has renewed a certificate."),
    AccountField(
        "notify_autossl_renewal_coverage",
        "boolean",
        True,
        "AutoSSL cannot add any additional domains because domains that fail Domain Control Validation exist on "
        "the current certificate.",
    ),
    AccountField(
        "notify_autossl_expiry_coverage",
        "boolean",
        True,
        "AutoSSL cannot renew a certificate because domains that fail Domain Control Validation exist on the "
        "current certificate.",
    ),
    AccountField("notify_autossl_expiry", "boolean", True, "AutoSSL certificate expiry."),
    AccountField("notify_ssl_expiry", "boolean", True, "SSL certificate expiry."),
    AccountField(
        "notify_autossl_renewal_coverage_reduced",
        "boolean",
        True,
        "AutoSSL has renewed a certificate, but the new certificate lacks at least one domain that the previous "
        "certificate secured.",
    ),
)
ACCOUNT_FIELD_BY_NAME: Mapping[str, AccountField] = {f.name: f for f in ACCOUNT_FIELDS}
ADDRESS_FIELDS = ("email", "second_email")
PREFERENCE_NAMES: tuple[str, ...] = tuple(f.name for f in ACCOUNT_FIELDS if f.kind == "boolean")
PREFERENCE_DEFAULTS: Mapping[str, bool] = {f.name: bool(f.default) for f in ACCOUNT_FIELDS if f.kind == "boolean"}

# Guard → the preference it watches (seeds/README: "the `*_notification_disabled` keys are guards").
GUARDS: Mapping[str, str] = {
    "notify_contact_address_change_notification_disabled": "notify_contact_address_change",
    "notify_password_change_notification_disabled": "notify_password_change",
    "notify_account_login_notification_disabled": "notify_account_login",
    "notify_account_authn_link_notification_disabled": "notify_account_authn_link",
    "notify_twofactorauth_change_notification_disabled": "notify_twofactorauth_change",
}

# What a stored token looks like in every answer; sent back unchanged it means "keep the stored token".
TOKEN_MASK = "********"


@dataclass(frozen=True, slots=True)
class AccountContactInfo:
    """An account's contact addresses, Pushbullet token and `notify_*` preferences (every key present)."""

    account: str
    email: str = ""
    second_email: str = ""
    pushbullet_access_token: str = field(default="", repr=False)  # a secret: never in reprs, logs or answers
    preferences: Mapping[str, bool] = field(default_factory=lambda: dict(PREFERENCE_DEFAULTS))

    @property
    def addresses(self) -> tuple[str, ...]:
        """The non-empty contact email addresses, primary first, without case-insensitive repeats."""
        return unique_addresses((self.email, self.second_email))

    def value(self, name: str) -> str | bool:
        """The current value of one `savecontactinfo` field."""
        if name in PREFERENCE_DEFAULTS:
            return self.preferences[name]
        return str(getattr(self, name))

    def masked_token(self) -> str:
        return TOKEN_MASK if self.pushbullet_access_token else ""

    def public_view(self) -> dict[str, Any]:
        """Every field by name, the token masked: the REST answer."""
        view: dict[str, Any] = {"account": self.account}
        for spec in ACCOUNT_FIELDS:
            view[spec.name] = self.masked_token() if spec.secret else self.value(spec.name)
        return view


def unique_addresses(addresses: Any) -> tuple[str, ...]:
    seen: set[str] = set()
    kept = []
    for address in addresses:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return tuple(kept)


# -- clients and contacts (WHMCS) --------------------------------------------------------------------------------

CATEGORIES: tuple[str, ...] = ("general", "product", "domain", "invoice", "support", "affiliate")
# WHMCS's flat flag for each category (`domainemails`), also the column name in the store.
FLAG_OF: Mapping[str, str] = {category: f"{category}emails" for category in CATEGORIES}

PERMISSIONS: tuple[str, ...] = (
    "profile",
    "contacts",
    "products",
    "manageproducts",
    "productsso",
    "domains",
    "managedomains",
    "invoices",
    "quotes",
    "tickets",
    "affiliates",
    "emails",
    "orders",
)

# Contact text fields and their longest accepted length.
CONTACT_TEXT_FIELDS: Mapping[str, int] = {
    "firstname": 100,
    "lastname": 100,
    "companyname": 200,
    "address1": 200,
    "address2": 200,
    "city": 100,
    "state": 100,
    "postcode": 20,
    "phonenumber": 40,
}
CLIENT_TEXT_FIELDS: Mapping[str, int] = {"firstname": 100, "lastname": 100, "companyname": 200}

# A client's own email preferences default to on (WHMCS); a new contact receives nothing unless asked.
CLIENT_DEFAULT_PREFERENCES: Mapping[str, bool] = dict.fromkeys(CATEGORIES, True)
CONTACT_DEFAULT_PREFERENCES: Mapping[str, bool] = dict.fromkeys(CATEGORIES, False)


@dataclass(frozen=True, slots=True)
class Client:
    """A billing client: the primary account holder, its email preferences and the hosting accounts it owns."""

    id: int
    email: str
    firstname: str
    lastname: str
    companyname: str
    email_preferences: Mapping[str, bool]
    accounts: tuple[str, ...]
    created_at: str
    updated_at: str

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "firstname": self.firstname,
            "lastname": self.lastname,
            "companyname": self.companyname,
            "email_preferences": dict(self.email_preferences),
            "accounts": list(self.accounts),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Contact:
    """A client's contact. The sub-account password is stored only as a hash and never leaves the store."""

    id: int
    client_id: int
    firstname: str
    lastname: str
    companyname: str
    email: str
    address1: str
    address2: str
    city: str
    state: str
    postcode: str
    country: str
    phonenumber: str
    subaccount: bool
    password_set: bool
    permissions: tuple[str, ...]
    email_preferences: Mapping[str, bool]
    created_at: str
    updated_at: str

    def public_view(self) -> dict[str, Any]:
        """The REST form: `email_preferences` as an object, `permissions` as a list."""
        view = self._fields()
        view.update(
            {
                "subaccount": self.subaccount,
                "password_set": self.password_set,
                "permissions": list(self.permissions),
                "email_preferences": dict(self.email_preferences),
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            }
        )
        return view

    def whmcs_view(self) -> dict[str, Any]:
        """WHMCS `GetContacts` form: `userid`, the flat `generalemails`… flags, comma-separated permissions."""
        view = self._fields()
        view["userid"] = view.pop("client_id")
        view["subaccount"] = int(self.subaccount)
        view["permissions"] = ",".join(self.permissions)
        for category in CATEGORIES:
            view[FLAG_OF[category]] = int(self.email_preferences[category])
        view["created_at"] = self.created_at
        view["updated_at"] = self.updated_at
        return view

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_id": self.client_id,
            "firstname": self.firstname,
            "lastname": self.lastname,
            "companyname": self.companyname,
            "email": self.email,
            "address1": self.address1,
            "address2": self.address2,
            "city": self.city,
            "state": self.state,
            "postcode": self.postcode,
            "country": self.country,
            "phonenumber": self.phonenumber,
        }


# -- value checks ------------------------------------------------------------------------------------------------

# The largest id a client or contact can have: SQLite's INTEGER is a signed 64-bit number.
MAX_ID = 2**63 - 1
# A field name shown as it is in a problem; any other is quoted (cut short, escaped).
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")

# Pragmatic address syntax: a dot-atom local part and a dotted domain of LDH labels. No spaces, no commas,
# no line breaks, so an address can never smuggle another header or a second recipient into a message.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._\-]{1,256}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9._@+\-]{1,128}")
_PHONE_RE = re.compile(r"[0-9+().\- xX#]*")
_POSTCODE_RE = re.compile(r"[A-Za-z0-9 \-]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

_TRUE_WORDS = frozenset({"1", "true", "on", "yes"})
_FALSE_WORDS = frozenset({"0", "false", "off", "no", ""})


def field_label(name: str) -> str:
    """`name` as a problem line shows it: unchanged when it is a plain short name, else quoted and cut short."""
    return name if _PLAIN_NAME_RE.fullmatch(name) else quote(name)


def parse_id(value: Any) -> int | None:
    """A client or contact id from JSON (an integer) or a form, query or path (ASCII digits): 1 … `MAX_ID`, else
    None (a boolean, a float, `"²"`, `10**30` are not ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_ID else None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19 and 1 <= int(text) <= MAX_ID:
            return int(text)
    return None


def text_problem(text: str) -> str | None:
    """What makes a string from a form, a query or a path unusable anywhere, or None: a NUL, or a lone surrogate
    (which only a hostile charset produces, and which SQLite cannot store)."""
    if "\x00" in text:
        return "contains a NUL character"
    if find_fault(text):
        return "is not valid Unicode (it holds a lone surrogate)"
    return None


def parameter_problems(params: Mapping[str, Any]) -> list[str]:
    """`text_problem` of each parameter name and string value: `name: problem` lines, names quoted when odd."""
    problems = []
    for key, value in params.items():
        key_problem = text_problem(key)
        if key_problem:
            problems.append(f"{quote(key)}: the parameter name {key_problem}")
        elif isinstance(value, str) and (value_problem := text_problem(value)):
            problems.append(f"{field_label(key)}: {value_problem}")
    return problems


def email_problem(value: str) -> str | None:
    """Why `value` is not a usable email address, or None when it is."""
    if len(value) > 254:
        return "is longer than 254 characters"
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return f"{quote(value)} is not an email address"
    if len(local) > 64 or not _LOCAL_RE.fullmatch(local):
        return f"{quote(value)} is not an email address (bad local part)"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return f"{quote(value)} is not an email address (bad domain)"
    return None


def parse_bool(value: Any) -> bool:
    """A boolean from JSON (`true`, `1`) or a form (`"1"`, `"0"`, `"on"`, `"off"`, `"yes"`, `"no"`, `""`).

    Raises ValueError for anything else, so that `notify_disk_limit=maybe` is refused rather than guessed.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"expected a boolean (1 or 0), got {quote(value)}")


def account_name_problem(account: str) -> str | None:
    if not _ACCOUNT_RE.fullmatch(account):
        return f"{quote(account)} is not an account name (1 to 128 letters, digits and ._@+-)"
    return None


def _text(name: str, value: Any, limit: int, problems: list[str]) -> str | None:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(f"{name}: expected a string")
        return None
    text = str(value).strip()
    if len(text) > limit:
        problems.append(f"{name}: longer than {limit} characters")
        return None
    if _CONTROL_RE.search(text):
        problems.append(f"{name}: contains control characters")
        return None
    return text


def _email(name: str, value: Any, problems: list[str], *, required: bool = False) -> str | None:
    text = _text(name, value, 254, problems)
    if text is None:
        return None
    if not text:
        if required:
            problems.append(f"{name}: is required")
            return None
        return ""
    problem = email_problem(text)
    if problem:
        problems.append(f"{name}: {problem}")
        return None
    return text


def validate_account_updates(raw: Mapping[str, Any]) -> dict[str, str | bool]:
    """Check a partial `savecontactinfo` update; return the new values by field name.

    Every unknown or malformed field is reported (`InvalidInput`), so nothing is stored unless all are good.
    A token equal to `TOKEN_MASK` is dropped: it is what the API showed, not a new token.
    """
    problems: list[str] = []
    updates: dict[str, str | bool] = {}
    for name, value in raw.items():
        spec = ACCOUNT_FIELD_BY_NAME.get(name)
        if spec is None:
            problems.append(f"{field_label(name)}: unknown field")
        elif spec.kind == "boolean":
            try:
                updates[name] = parse_bool(value)
            except ValueError as err:
                problems.append(f"{name}: {err}")
        elif name in ADDRESS_FIELDS:
            email = _email(name, value, problems)
            if email is not None:
                updates[name] = email
        else:  # the Pushbullet token
            token = _text(name, value, 256, problems)
            if token is None:
                continue
            if token == TOKEN_MASK:
                continue
            if token and not _TOKEN_RE.fullmatch(token):
                # Never echo the value: it is a secret even when malformed.
                problems.append(f"{name}: an access token is 1 to 256 letters, digits and ._-")
                continue
            updates[name] = token
    if problems:
        raise InvalidInput(problems)
    return updates


def _preferences(name: str, value: Any, problems: list[str]) -> dict[str, bool] | None:
    if not isinstance(value, Mapping):
        problems.append(f"{name}: expected an object of categories ({', '.join(CATEGORIES)})")
        return None
    prefs: dict[str, bool] = {}
    for category, flag in value.items():
        if category not in CATEGORIES:
            problems.append(
                f"{name}[{field_label(category)}]: unknown category (expected one of {', '.join(CATEGORIES)})"
            )
            continue
        try:
            prefs[category] = parse_bool(flag)
        except ValueError as err:
            problems.append(f"{name}[{category}]: {err}")
    return prefs


def parse_permissions(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    """`"manageproducts,managedomains"` or a list of names; each must be a documented sub-account permission."""
    if value is None:
        return ()
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple) and all(isinstance(part, str) for part in value):
        names = [part.strip() for part in value]
    else:
        problems.append("permissions: expected a comma-separated string or a list of names")
        return None
    names = [name for name in names if name]
    unknown = [name for name in names if name not in PERMISSIONS]
    if unknown:
        shown = ", ".join(field_label(name) for name in unknown[:5]) + (", …" if len(unknown) > 5 else "")
        problems.append(f"permissions: unknown permission(s) {shown} (allowed: {', '.join(PERMISSIONS)})")
        return None
    # Keep the documented order and drop repeats, so the stored list is canonical.
    return tuple(name for name in PERMISSIONS if name in names)


CONTACT_FIELDS = frozenset(
    {*CONTACT_TEXT_FIELDS, "email", "country", "subaccount", "password2", "permissions", "email_preferences"}
)
CLIENT_FIELDS = frozenset({"id", *CLIENT_TEXT_FIELDS, "email", "email_preferences", "accounts"})


def validate_contact_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check contact fields given by name (all optional); return the clean values.

    `email_preferences` comes back as a dict category → bool holding only the categories given; `password2`
    as the plain text (the caller hashes it); an empty `password2` is dropped, as WHMCS forms send it empty.
    """
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in CONTACT_FIELDS:
            problems.append(f"{field_label(name)}: unknown field")
        elif name in CONTACT_TEXT_FIELDS:
            text = _text(name, value, CONTACT_TEXT_FIELDS[name], problems)
            if text is None:
                continue
            if name == "phonenumber" and not _PHONE_RE.fullmatch(text):
                problems.append(f"phonenumber: {quote(text)} is not a phone number (digits, spaces and +().-x#)")
            elif name == "postcode" and not _POSTCODE_RE.fullmatch(text):
                problems.append(f"postcode: {quote(text)} is not a postcode (letters, digits, spaces and -)")
            else:
                clean[name] = text
        elif name == "email":
            email = _email(name, value, problems)
            if email is not None:
                clean[name] = email
        elif name == "country":
            if value is None:
                clean[name] = ""
            elif not isinstance(value, str):
                problems.append("country: expected a 2 character ISO 3166-1 country code")
            elif (code := value.strip().upper()) and code not in ISO_3166_ALPHA2:
                problems.append(f"country: {quote(value)} is not an ISO 3166-1 alpha-2 country code")
            else:
                clean[name] = code
        elif name == "subaccount":
            try:
                clean[name] = parse_bool(value)
            except ValueError as err:
                problems.append(f"subaccount: {err}")
        elif name == "password2":
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                problems.append("password2: expected a string")
            elif len(value) > 1024:
                problems.append("password2: longer than 1024 characters")
            else:
                clean[name] = value
        elif name == "permissions":
            permissions = parse_permissions(value, problems)
            if permissions is not None:
                clean[name] = permissions
        else:  # email_preferences
            prefs = _preferences(name, value, problems)
            if prefs is not None:
                clean[name] = prefs
    if problems:
        raise InvalidInput(problems)
    return clean


def validate_client_fields(raw: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Check client fields; on creation `email` is required and `id` may be given (a positive integer)."""
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in CLIENT_FIELDS or (name == "id" and not creating):
            problems.append(f"{field_label(name)}: unknown field" if name != "id" else "id: cannot be changed")
        elif name == "id":
            if value is None:
                continue
            if not isinstance(value, int) or parse_id(value) is None:
                problems.append(f"id: expected an integer from 1 to {MAX_ID}")
            else:
                clean[name] = value
        elif name in CLIENT_TEXT_FIELDS:
            text = _text(name, value, CLIENT_TEXT_FIELDS[name], problems)
            if text is not None:
                clean[name] = text
        elif name == "email":
            email = _email(name, value, problems, required=True)
            if email is not None:
                clean[name] = email
        elif name == "email_preferences":
            prefs = _preferences(name, value, problems)
            if prefs is not None:
                clean[name] = prefs
        else:  # accounts
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                problems.append("accounts: expected a list of account names")
                continue
            bad = [p for p in (account_name_problem(a) for a in value) if p]
            if bad:
                problems.extend(f"accounts: {p}" for p in bad)
                continue
            clean[name] = tuple(dict.fromkeys(value))
    if creating and "email" not in raw:
        problems.append("email: is required")
    if problems:
        raise InvalidInput(problems)
    return clean
