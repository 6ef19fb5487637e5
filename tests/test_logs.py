"""Logs: one JSON object per line with the agreed fields, text for developers, and no patient data above DEBUG,
across a whole accept → deliver run of a realistic sample (and a refusal and a dead letter) on a real server."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import require_shared
from itk_factory import HL7, find, to_bytes
from lxml import etree
from server_fixture import RunningServer, start_server

from adaptor.config import ConfigError, Settings
from adaptor.ops.logs import JsonFormatter, QueryStringRedactor, TextFormatter, configure_logging, escape_control
from adaptor.samples import addressed_codes, build_scenario, scenario
from adaptor.store import Status

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SAMPLE = "gp-referral"


def record(message: str, level: int = logging.INFO, name: str = "adaptor.test", **fields: Any) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, None, None)
    made.__dict__.update(fields)
    return made


# == formatters ===================================================================================================


def test_json_lines_carry_time_level_logger_event_and_the_fields_in_order() -> None:
    line = JsonFormatter().format(
        record("message accepted", message_id="M-1", tracking_id="T-1", ods_code="X1", duration_ms=12.5, rule=None)
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert list(parsed) == ["time", "level", "logger", "event", "message_id", "tracking_id", "ods_code", "duration_ms"]
    assert ISO_UTC_MS.fullmatch(parsed["time"])
    assert parsed["level"] == "INFO" and parsed["logger"] == "adaptor.test" and parsed["event"] == "message accepted"
    assert parsed["duration_ms"] == 12.5  # numbers stay numbers; None fields are left out


def test_json_lines_stay_one_line_and_ascii() -> None:
    try:
        raise ValueError("two\nlines")
    except ValueError:
        failing = logging.LogRecord(
            "tornado.general", logging.ERROR, __file__, 1, "Exception while serving %s", ("/x",), sys.exc_info()
        )
    line = JsonFormatter().format(failing)
    assert "\n" not in line and line.isascii()
    parsed = json.loads(line)
    assert parsed["event"] == "Exception while serving /x" and "ValueError: two\nlines" in parsed["exception"]
    assert json.loads(JsonFormatter().format(record("Zoë's café", where=("a", 1))))["where"] == ["a", 1]


def test_text_lines_append_the_fields() -> None:
    formatter = TextFormatter()
    line = formatter.format(record("message delivered", record_id="r-1", target="dir:/var/out box", attempt=2))
    assert line.endswith(' INFO adaptor.test message delivered record_id=r-1 target="dir:/var/out box" attempt=2')


def test_text_lines_escape_control_characters_in_the_event_and_every_field() -> None:
    forged = "M-1\n2025-03-01 09:30:12,345 INFO adaptor.service message accepted"
    formatter = TextFormatter()
    in_event = logging.LogRecord("adaptor.test", logging.INFO, __file__, 1, "refused %s", (forged,), None)
    line = formatter.format(in_event)
    assert "\n" not in line
    assert line.endswith(" refused M-1\\n2025-03-01 09:30:12,345 INFO adaptor.service message accepted")
    made = record("refused", message_id=forged, tracking_id="T\x1b[2J\u2028\u2029\x85", interaction="a\x7fb\x1b")
    made.ods_code = ["X1", "Y\u202e2"]
    line = formatter.format(made)
    assert line.isprintable() and line.isascii(), line
    assert line.endswith(
        ' refused message_id="M-1\\n2025-03-01 09:30:12,345 INFO adaptor.service message accepted"'
        ' tracking_id="T\\u001b[2J\\u2028\\u2029\\u0085" interaction=a\\x7fb\\x1b ods_code=X1,Y\\u202e2'
    )


def test_text_tracebacks_follow_indented_and_cannot_forge_a_line() -> None:
    try:
        raise ValueError("bad\n2025-03-01 09:30:12,345 INFO adaptor.service forged\x1b[0m")
    except ValueError:
        failing = logging.LogRecord("adaptor.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    first, *rest = TextFormatter().format(failing).split("\n")
    assert first.endswith(" ERROR adaptor.test failed") and rest
    assert all(line.startswith("    ") and line.isprintable() for line in rest), rest
    assert failing.exc_text is None  # nothing cached on the record for other handlers


def test_escape_control() -> None:
    assert escape_control("plain text, Zoë's café \\n") == "plain text, Zoë's café \\n"
    assert escape_control("a\nb\rc\td\x00e\x1bf\x9fg\u2028h\u2029i\u2066j") == (
        "a\\nb\\rc\\td\\x00e\\x1bf\\x9fg\\u2028h\\u2029i\\u2066j"
    )


def test_json_lines_escape_control_characters_through_json() -> None:
    value = "M-1\n\r\x1b\x85\u2028\u2029\u202e"
    line = JsonFormatter().format(record("refused", message_id=value))
    assert line.isascii() and line.isprintable()
    assert json.loads(line)["message_id"] == value


def test_query_strings_are_cut_from_the_http_servers_lines() -> None:
    redactor = QueryStringRedactor()
    for name in ("tornado.access", "tornado.general", "werkzeug"):
        line = record("Exception while serving %s", name=name)
        line.args = ("/console/messages?q=9990001235",)
        assert redactor.filter(line)
        assert line.getMessage() == "Exception while serving /console/messages?<query omitted>"
    ours = record("SOAPAction %r")
    ours.args = ("urn:x?y",)
    redactor.filter(ours)
    assert ours.getMessage() == "SOAPAction 'urn:x?y'"


def test_configure_logging_sends_everything_through_one_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("pika").level
    try:
        configure_logging(Settings(log_level="WARNING", log_format="json"))
        assert len(root.handlers) == 1 and root.level == logging.WARNING
        assert logging.getLogger("pika").level == logging.CRITICAL
        assert logging.getLogger("spyne").level > logging.CRITICAL
        logging.getLogger("proton").warning("from a library")
        logging.getLogger("adaptor.x").info("not shown")
        [line] = stream.getvalue().splitlines()
        assert json.loads(line)["logger"] == "proton"

        configure_logging(Settings(log_level="DEBUG", log_format="text"))
        assert len(root.handlers) == 1 and logging.getLogger("pika").level == logging.NOTSET
        logging.getLogger("adaptor.x").debug("shown", extra={"record_id": "r"})
        assert stream.getvalue().splitlines()[-1].endswith("DEBUG adaptor.x shown record_id=r")
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("pika").setLevel(saved[2])


def test_the_format_setting() -> None:
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({"PEM111_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ConfigError, match="PEM111_LOG_FORMAT"):
        Settings.from_env({"PEM111_LOG_FORMAT": "xml"})


# == a real server: accept → deliver, a refusal, a dead letter ====================================================


def patient_data(root: etree._Element) -> list[str]:
    """What identifies the patient in the sample: names, NHS number, address, postcode, telephone, birth date."""
    values: list[str] = []
    for document in root.iter(f"{{{HL7}}}ClinicalDocument"):
        patient = document.find(f".//{{{HL7}}}recordTarget/{{{HL7}}}patientRole")
        assert patient is not None
        values += [i.get("extension") or "" for i in patient.iterfind(f"{{{HL7}}}id")]
        values += [e.text or "" for e in patient.iter(f"{{{HL7}}}given", f"{{{HL7}}}family")]
        values += [e.text or "" for e in patient.iter(f"{{{HL7}}}streetAddressLine", f"{{{HL7}}}postalCode")]
        values += [(t.get("value") or "").removeprefix("tel:") for t in patient.iter(f"{{{HL7}}}telecom")]
        values += [b.get("value") or "" for b in patient.iter(f"{{{HL7}}}birthTime")]
    return sorted({v for v in values if len(v) >= 4})


def log_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = server.log_text().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for line in parsed:
        assert {"time", "level", "logger", "event"} <= set(line), line
        assert ISO_UTC_MS.fullmatch(line["time"]), line
    return parsed


def events(lines: list[dict[str, Any]], event: str, **fields: object) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == event and all(line.get(k) == v for k, v in fields.items())]


@pytest.fixture(params=["info", "debug"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    codes = addressed_codes()
    running = start_server(
        tmp_path,
        PEM111_LOG_LEVEL=request.param,
        PEM111_ITK_ODS_CODE_LIST=",".join(codes.ods_codes),
        PEM111_ITK_DOS_ID_LIST=",".join(codes.dos_ids),
        PEM111_DELIVERY_MAX_ATTEMPTS="1",
    )
    yield running
    running.stop()


def test_a_full_run_logs_json_with_identifiers_and_no_patient_data_above_debug(server: RunningServer) -> None:
    require_shared("schemas", "iuc")  # the CDA schema (rule D4), whose messages can quote the document
    sample = build_scenario(scenario(SAMPLE))
    sensitive = patient_data(sample)
    assert len(sensitive) >= 5, sensitive
    message_id = find(sample, "wsa:MessageID").text
    tracking_id = find(sample, "itk:header").get("trackingid")
    headers = {"Content-Type": "text/xml; charset=utf-8"}

    # Accepted and delivered.
    assert requests.post(server.report_url, data=to_bytes(sample), headers=headers, timeout=30).status_code == 200
    [stored] = server.wait_for_status(message_id or "")

    # Refused: a schema violation in the same document, whose diagnostic may quote it.
    invalid = build_scenario(scenario(SAMPLE))
    next(invalid.iter(f"{{{HL7}}}ClinicalDocument")).insert(0, etree.Element(f"{{{HL7}}}notInTheSchema"))
    assert requests.post(server.report_url, data=to_bytes(invalid), headers=headers, timeout=30).status_code == 500

    # Dead-lettered: the outbox folder is a file and one attempt is allowed.
    aside = server.outbox.with_name("outbox-aside")
    server.outbox.rename(aside)
    server.outbox.write_text("not a folder")
    doomed = build_scenario(scenario(SAMPLE))
    assert requests.post(server.report_url, data=to_bytes(doomed), headers=headers, timeout=30).status_code == 200
    server.wait_for_status(find(doomed, "wsa:MessageID").text or "", Status.DEAD_LETTER)
    server.stop()

    lines = log_lines(server)
    [accepted] = events(lines, "message accepted", message_id=message_id)
    assert accepted["level"] == "INFO" and accepted["record_id"] == stored.id and accepted["tracking_id"] == tracking_id
    assert accepted["interaction"] == stored.interaction and accepted["ods_code"] == ",".join(stored.ods_codes)
    [answered] = events(lines, "request answered", message_id=message_id)
    assert answered["outcome"] == "ok" and answered["status"] == 200 and answered["tracking_id"] == tracking_id
    assert answered["interaction"] == stored.interaction and answered["ods_code"] and answered["sender_ods"]
    assert isinstance(answered["duration_ms"], float) and answered["duration_ms"] > 0
    [delivered] = events(lines, "message delivered", message_id=message_id)
    assert delivered["record_id"] == stored.id and delivered["attempt"] == 1 and delivered["duration_ms"] >= 0
    assert delivered["target"].startswith("dir:")

    [refused] = events(lines, "fault answered", rule="D4")
    assert refused["level"] == "INFO" and refused["error_code"] == 1000 and refused["error_id"]
    assert refused["error_text"] and "diagnostic" not in refused
    [refused_request] = events(lines, "request answered", error_id=refused["error_id"])
    assert refused_request["outcome"] == "fault" and refused_request["rule"] == "D4"
    [dead] = events(lines, "delivery failed, out of attempts, message dead-lettered")
    assert dead["level"] == "ERROR" and dead["message_id"] == find(doomed, "wsa:MessageID").text

    above_debug = [line for line in lines if line["level"] != "DEBUG"]
    leaks = [(value, line) for line in above_debug for value in sensitive if value in json.dumps(line)]
    assert not leaks, leaks
    assert not [line for line in above_debug if "exception" in line]
    assert not [line for line in lines if line["logger"].startswith("spyne")]
    if server.env["PEM111_LOG_LEVEL"] == "debug":
        # The diagnostic went to DEBUG, under the error id the INFO line carries.
        assert events(lines, "fault diagnostic", error_id=refused["error_id"])


def test_text_format_for_developers(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, PEM111_LOG_FORMAT="text", PEM111_ITK_ODS_CODE_LIST="X1", PEM111_ITK_DOS_ID_LIST="9000001"
    )
    server.stop()
    lines = server.log_text().splitlines()
    assert lines and not [line for line in lines if line.startswith("{")]
    assert lines[-1].endswith(" INFO adaptor.server stopped")

