"""The console's JSON API (issue 15): search, a message, replay, by token or session; its OpenAPI document, and
schemathesis generating requests from that document against the running app (no 5xx, every response within the
documented schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks
from test_console import PASSWORD_HASH, TOKEN, Console, open_console, sign_in

from adaptor.samples import SCENARIOS, build_sample
from adaptor.store import Status

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A console with the sample catalogue stored (delivered) and one dead letter, a read-only user ``rita``."""
    running = open_console(
        tmp_path_factory.mktemp("api"),
        console_users=(("alice", PASSWORD_HASH), ("rita", PASSWORD_HASH)),
        console_read_only_users=("rita",),
    )
    for scenario in SCENARIOS:
        assert running.post_raw(build_sample(scenario)) == 200
    running.worker.drain()
    running.dead_letter()
    yield running
    running.close()


def test_the_api_needs_a_token_or_a_session(filled: Console) -> None:
    client = filled.client
    for path in ("/console/api/messages", "/console/api/me", "/console/api/openapi.json"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.is_json, path
        assert refused.json == {"error": "Not signed in", "detail": refused.json["detail"]}
    wrong = client.get("/console/api/messages", headers={"Authorization": "Bearer not-the-token-at-all-000000"})
    assert wrong.status_code == 401 and wrong.json["detail"] == "The bearer token was not accepted."
    me = client.get("/console/api/me", headers=BEARER).json
    assert me == {"user": "token", "may_replay": True, "csrf_token": None}


def test_search_page_and_counts(filled: Console) -> None:
    client = filled.client
    everything = client.get("/console/api/messages", headers=BEARER, query_string={"per_page": "5"}).json
    assert everything["total"] == len(SCENARIOS) + 1 and everything["pages"] == 3 and len(everything["messages"]) == 5
    assert everything["counts"][Status.DELIVERED.value] == len(SCENARIOS)
    assert set(everything["counts"]) == {s.value for s in Status}
    patient = next(m for m in everything["messages"] if m["patient"] and m["patient"]["nhs_number"])
    number = patient["patient"]["nhs_number"]
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    found = client.get("/console/api/messages", headers=BEARER, query_string={"nhs_number": spaced}).json
    assert found["total"] >= 1 and all(m["patient"]["nhs_number"] == number for m in found["messages"])
    dead = client.get("/console/api/messages", headers=BEARER, query_string={"status": "dead_letter"}).json
    assert dead["total"] == 1 and dead["counts"]["delivered"] == len(SCENARIOS)
    for bad in ({"born": "yesterday"}, {"status": "lost"}, {"page": "0"}, {"per_page": "1000"}, {"from": "soon"}):
        answer = client.get("/console/api/messages", headers=BEARER, query_string=bad)
        assert answer.status_code == 400 and answer.json["error"] == "Bad Request", bad


def test_a_message_and_its_replay(filled: Console) -> None:
    client = filled.client
    [dead] = filled.client.get(
        "/console/api/messages", headers=BEARER, query_string={"status": "dead_letter"}
    ).json["messages"]
    detail = client.get(f"/console/api/messages/{dead['record_id']}", headers=BEARER).json
    assert detail["state"] == "dead_letter" and detail["delivery_attempts"][0]["outcome"] == "failed"
    assert detail["links"]["request"].endswith(f"/console/messages/{dead['record_id']}/request.xml")
    assert client.get("/console/api/messages/unknown", headers=BEARER).status_code == 404

    replayed = client.post(f"/console/api/messages/{dead['record_id']}/replay", headers=BEARER, json={})
    assert replayed.status_code == 200
    assert replayed.json["queued"] and replayed.json["previous_state"] == "dead_letter"
    detail = client.get(f"/console/api/messages/{dead['record_id']}", headers=BEARER).json
    assert [(a["operator"], a["action"]) for a in detail["operator_actions"]] == [("token", "redeliver")]
    bad = client.post(f"/console/api/messages/{dead['record_id']}/replay", headers=BEARER, json={"mode": "twice"})
    assert bad.status_code == 400 and bad.json["detail"].startswith("mode:")
    selection = client.post(
        "/console/api/replay", headers=BEARER, json={"record_ids": [dead["record_id"], "nope"], "mode": "reconvert"}
    ).json
    assert selection["unknown"] == ["nope"] and selection["results"][0]["bundle_version"] == 2
    filled.worker.drain()


def test_a_session_posts_with_its_csrf_header_and_read_only_users_cannot_replay(filled: Console) -> None:
    record_id = filled.store.list_messages(limit=1)[0].id
    alice: FlaskClient = filled.client
    sign_in(alice)
    me = alice.get("/console/api/me").json
    assert me["user"] == "alice" and me["may_replay"] and me["csrf_token"]
    url = f"/console/api/messages/{record_id}/replay"
    assert alice.post(url, json={}).status_code == 403  # no X-CSRF-Token: a cross-site form could do this
    assert alice.post(url, json={}, headers={"X-CSRF-Token": me["csrf_token"]}).status_code == 200

    rita = filled.client
    sign_in(rita, "rita")
    token = rita.get("/console/api/me").json["csrf_token"]
    refused = rita.post(url, json={}, headers={"X-CSRF-Token": token})
    assert refused.status_code == 403 and "not replay" in refused.json["detail"]
    assert rita.get("/console/api/messages").status_code == 200
    filled.worker.drain()


# == schemathesis ================================================================================================


#: What the issue asks of every generated request: no server error, and a response the document describes.
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def test_the_api_keeps_to_its_openapi_document(filled: Console) -> None:
    """Every operation of the served document, with requests schemathesis generates from it (valid and not):
    never a 5xx, and every answer's status, content type and body as documented."""
    schema = schemathesis.openapi.from_wsgi("/console/api/openapi.json", filled.app.site, headers=BEARER)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "GET /console/api/messages",
        "GET /console/api/messages/{record_id}",
        "POST /console/api/messages/{record_id}/replay",
        "POST /console/api/replay",
        "GET /console/api/me",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def answers_as_documented(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=BEARER, checks=CHECKS)
            assert response.status_code < 500

        answers_as_documented()
    filled.worker.drain()


def test_the_document_names_every_state(filled: Console, tmp_path: Path) -> None:
    document = filled.client.get("/console/api/openapi.json", headers=BEARER).json
    assert document["openapi"].startswith("3.1")
    states = document["components"]["schemas"]["Status"]["enum"]
    assert states == [s.value for s in Status]  # a state added to Status is documented with no other change
