"""The console's search, read from a query string: one reading for the message list and for the API.

Every parameter is optional and narrows the search (:class:`adaptor.store.MessageQuery` says what each matches):

``q``           what the one search box takes: an NHS number, or the beginning of a MessageID, trackingid or
                record id, or an ODS code or DoS id
``nhs_number``  the patient's NHS number, spaces allowed
``name``        the beginning of the patient's family or first given name (two words: given and family), any case
``born``        the date of birth, ``YYYY-MM-DD``
``postcode``    the patient's postcode, or its beginning
``from``, ``to`` received at or after / before: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``, in Europe/London
                time unless an offset (or ``Z``) is given; a date alone as ``to`` includes that whole day
``status``      a delivery state (repeatable)
``sender``, ``recipient``, ``interaction``, ``disposition``: see :class:`~adaptor.store.MessageQuery`
``warnings``    ``1``: only messages converted with warnings

A value that cannot be read is a :class:`SearchError` naming the parameter (the page says so; the API answers
400), never a silent "no results".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from werkzeug.datastructures import MultiDict

from adaptor.console.access import LOCAL_TIME
from adaptor.itk.wire import as_utc
from adaptor.store import MessageQuery, Status

#: The longest value of any search parameter used (MessageIDs and trackingids are UUIDs; names are short).
MAX_SEARCH = 200
#: The text parameters, as (query-string name, MessageQuery field).
TEXT_PARAMETERS = (
    ("q", "search"),
    ("nhs_number", "nhs_number"),
    ("name", "name"),
    ("postcode", "postcode"),
    ("sender", "sender"),
    ("recipient", "recipient"),
    ("interaction", "interaction"),
    ("disposition", "disposition"),
)
#: Every parameter a search reads (the list's links keep them from page to page).
PARAMETERS = (*(name for name, _ in TEXT_PARAMETERS), "born", "from", "to", "status", "warnings")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SearchError(ValueError):
    """A search parameter that cannot be read; the message names it."""


@dataclass(frozen=True)
class Search:
    """A search as asked (``values``: what the form shows again) and as the store runs it (``query``)."""

    query: MessageQuery
    values: dict[str, str] = field(default_factory=dict)
    statuses: tuple[Status, ...] = ()

    @property
    def narrowed(self) -> bool:
        """Whether anything but the state narrows it."""
        return any(value for name, value in self.values.items() if name != "status")

    def link_args(self) -> dict[str, object]:
        """The query-string arguments that repeat this search (for page and state links)."""
        args: dict[str, object] = {name: value for name, value in self.values.items() if value and name != "status"}
        if self.statuses:
            args["status"] = [s.value for s in self.statuses]
        return args


def read_search(args: MultiDict[str, str] | Mapping[str, str]) -> Search:
    """The search of a query string. Raises :class:`SearchError`."""
    multi = args if isinstance(args, MultiDict) else MultiDict(args)
    values: dict[str, str] = {}
    fields: dict[str, object] = {}
    for name, attribute in TEXT_PARAMETERS:
        value = multi.get(name, "").strip()[:MAX_SEARCH]
        values[name] = value
        fields[attribute] = value or None
    born = multi.get("born", "").strip()
    if born and not _is_date(born):
        raise SearchError(f"born: {born[:40]!r} is not a date (YYYY-MM-DD)")
    values["born"] = born
    fields["birth_date"] = born or None
    for name, attribute, end_of_day in (("from", "since", False), ("to", "until", True)):
        text = multi.get(name, "").strip()[:MAX_SEARCH]
        values[name] = text
        fields[attribute] = parse_moment(name, text, end_of_day=end_of_day) if text else None
    known = {s.value: s for s in Status}
    statuses: list[Status] = []
    for value in multi.getlist("status"):
        if not value:
            continue
        if value not in known:
            raise SearchError(f"status: {value[:40]!r} is not a state ({', '.join(known)})")
        statuses.append(known[value])
    values["status"] = ",".join(s.value for s in statuses)
    warnings = multi.get("warnings", "").strip().lower()
    if warnings not in ("", "0", "1", "true", "false", "on"):
        raise SearchError(f"warnings: {warnings[:40]!r} is not 1 or 0")
    values["warnings"] = "1" if warnings in ("1", "true", "on") else ""
    query = MessageQuery(statuses=tuple(statuses), with_warnings=bool(values["warnings"]), **fields)  # type: ignore[arg-type]
    return Search(query, values, tuple(statuses))


def _is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def parse_moment(name: str, text: str, *, end_of_day: bool = False) -> datetime:
    """A ``from``/``to`` value as a UTC time: a date (its start, or with ``end_of_day`` the start of the next
    day) or a date and time, in Europe/London unless it carries an offset. Raises :class:`SearchError`."""
    try:
        if _is_date(text):
            day = date.fromisoformat(text) + (timedelta(days=1) if end_of_day else timedelta())
            return as_utc(datetime.combine(day, time(), tzinfo=LOCAL_TIME))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=LOCAL_TIME)
        return as_utc(moment)
    except (ValueError, OverflowError):  # not a time, or one at the very ends of the calendar
        raise SearchError(f"{name}: {text[:40]!r} is not a date or a date and time (YYYY-MM-DDTHH:MM)") from None
