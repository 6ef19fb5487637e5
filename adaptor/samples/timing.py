"""The clock of a synthetic call: one instant (the document time) from which every other time is derived.

Samples are generated with fresh dates, so nothing in the catalogue is a date: a report says how many minutes
before the generation time it was written and how long the call lasted, and :func:`call_for` turns that into
the times (and case ids) that the CDA and its Pathways case share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from adaptor.itk.wire import new_upper_uuid

LONDON = ZoneInfo("Europe/London")


def hl7_ts(moment: datetime, style: str = "offset") -> str:
    """An HL7 TS to the second: London local time with its offset (``+0100``), or without one (``local``)."""
    local = moment.astimezone(LONDON)
    text = local.strftime("%Y%m%d%H%M%S")
    return text if style == "local" else text + local.strftime("%z")


def xs_datetime(moment: datetime, style: str = "offset") -> str:
    """An xs:dateTime to the second: UTC with ``Z``, or London local time without a zone (``local``)."""
    if style == "local":
        return moment.astimezone(LONDON).strftime("%Y-%m-%dT%H:%M:%S")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human(moment: datetime) -> str:
    """A date and time as a 111 report prints it: ``01-Jun-2025, 14:00`` (London time)."""
    return moment.astimezone(LONDON).strftime("%d-%b-%Y, %H:%M")


def birth_date(age: tuple[int, int], today: date) -> date:
    """The birth date of someone ``age`` = (years, days) old ``today`` (29 February becomes 28 February)."""
    years, days = age
    try:
        anniversary = today.replace(year=today.year - years)
    except ValueError:
        anniversary = today.replace(year=today.year - years, day=28)
    return anniversary - timedelta(days=days)


@dataclass(frozen=True)
class Call:
    """The times and ids of one 111 call, shared by the CDA and its Pathways case."""

    document_time: datetime
    start: datetime
    end: datetime
    case_guid: str
    case_reference: str
    time_style: str

    def ts(self, moment: datetime) -> str:
        """``moment`` as an HL7 TS in this call's style."""
        return hl7_ts(moment, self.time_style)

    def xs(self, moment: datetime) -> str:
        """``moment`` as an xs:dateTime in this call's style (the Pathways case)."""
        return xs_datetime(moment, self.time_style)


def call_for(now: datetime, *, minutes_ago: int, call_minutes: int, time_style: str) -> Call:
    """The call behind a report written ``minutes_ago`` before ``now`` (aware) after a ``call_minutes`` call."""
    document_time = (now - timedelta(minutes=minutes_ago)).replace(microsecond=0)
    start = document_time - timedelta(minutes=call_minutes + 2)
    return Call(
        document_time=document_time,
        start=start,
        end=document_time - timedelta(minutes=1),
        case_guid=new_upper_uuid(),
        # A case reference as 111 systems print them: eight digits, unique enough for a sample.
        case_reference=str(int(new_upper_uuid()[:8], 16) % 90_000_000 + 10_000_000),
        time_style=time_style,
    )
