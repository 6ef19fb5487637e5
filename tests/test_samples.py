"""The sample catalogue (adaptor.samples) and the committed ``samples/`` folder.

Every sample must be accepted by the adaptor (default settings, and with the published schema pack: CDA rule D4,
Pathways rule D6) and convert to a valid FHIR STU3 Bundle; each scenario must show what it was written for; a new
generation must have new ids; and ``samples/`` must be what the catalogue generates.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, require_shared
from lxml import etree

from adaptor.cli.operator import samples as samples_command
from adaptor.config import Settings
from adaptor.delivery.conversion import convert, validate_bundle
from adaptor.itk import schemas
from adaptor.itk.allowlist import AllowList
from adaptor.itk.documents import document_keys, read_nullification
from adaptor.itk.message import ItkMessage
from adaptor.itk.rules import parse_request, validate_request
from adaptor.itk.xmlsafe import HL7, ITK, NS, SOAP11, WSA
from adaptor.samples import (
    INDEX_FILE,
    NULLIFICATIONS,
    SCENARIOS,
    Nullification,
    Scenario,
    addressed_codes,
    build_pair,
    build_sample,
    generate,
    index_markdown,
    scenario,
)
from adaptor.samples.cda import NHS_NUMBER_UNVERIFIED, NHS_NUMBER_VERIFIED
from adaptor.samples.pathways import PATHWAYS
from adaptor.samples.timing import LONDON

SAMPLES_DIR = REPO / "samples"
NAMES = [s.name for s in SCENARIOS]
PW = {"pw": PATHWAYS}
ALLOW = addressed_codes()
ALLOWING = Settings(itk_ods_code_list=ALLOW.ods_codes, itk_dos_id_list=ALLOW.dos_ids)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One fresh generation of the whole catalogue, by name."""
    folder = tmp_path_factory.mktemp("samples")
    generate(folder)
    return {s.name: (folder / s.file_name).read_bytes() for s in SCENARIOS}


def schema_settings(**changes: Any) -> Settings:
    """Settings with the published schema pack (rules D4-D6); fails under CI when ../shared is missing."""
    return Settings(schema_dir=str(require_shared("schemas")), **changes)


def validate(raw: bytes, settings: Settings = ALLOWING) -> ItkMessage:
    return validate_request(parse_request(raw, settings), settings, AllowList(settings))


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def one(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    [found] = resources(bundle, resource_type)
    return found


def by_reference(bundle: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    [found] = [e["resource"] for e in bundle["entry"] if e["fullUrl"] == reference["reference"]]
    return found


def documents(raw: bytes) -> list[etree._Element]:
    return list(etree.fromstring(raw).iter(f"{{{HL7}}}ClinicalDocument"))


def pathways_cases(document: etree._Element) -> list[etree._Element]:
    values = document.iterfind(".//hl7:observationMedia/hl7:value", NS)
    return [etree.fromstring(base64.b64decode(value.text or "")) for value in values]


def shape(raw: bytes) -> list[tuple[str, tuple[str, ...]]]:
    """The structure of a request: every element's tag and attribute names, in document order."""
    return [(str(e.tag), tuple(sorted(e.attrib))) for e in etree.fromstring(raw).iter(etree.Element)]


# -- the catalogue ---------------------------------------------------------------------------------------------


def test_catalogue_has_the_scenarios_of_the_issue() -> None:
    assert NAMES == [
        "gp-referral",
        "ed-referral",
        "ooh-utc-referral",
        "copy-for-information",
        "ambulance-callout-copy",
        "safeguarding-referral",
        "repeat-caller",
        "no-nhs-number",
        "two-locations",
        "no-offset",
        "several-triages",
    ]
    assert len({s.file_name for s in SCENARIOS}) == len(SCENARIOS)
    assert scenario("repeat-caller").name == "repeat-caller"
    with pytest.raises(KeyError):
        scenario("no-such-scenario")


def _nhs_number_is_valid(number: str) -> bool:
    """Modulus 11 check digit (NHS number rules)."""
    if not re.fullmatch(r"\d{10}", number):
        return False
    total = sum(int(digit) * (10 - index) for index, digit in enumerate(number[:9]))
    check = 11 - total % 11
    return (0 if check == 11 else check) == int(number[9])


@pytest.mark.parametrize("name", NAMES)
def test_patients_are_synthetic(name: str, generated: dict[str, bytes]) -> None:
    """Every NHS number on the wire (CDA and Pathways) is in the test range with a valid check digit."""
    numbers = []
    for document in documents(generated[name]):
        for root in (NHS_NUMBER_VERIFIED, NHS_NUMBER_UNVERIFIED):
            numbers += [i.get("extension", "") for i in document.iterfind(f".//hl7:id[@root='{root}']", NS)]
        for case in pathways_cases(document):
            numbers += [n.text or "" for n in case.iterfind(".//pw:nationalNumber", PW)]
    for number in numbers:
        assert number.startswith("999") and _nhs_number_is_valid(number), number
    expected = [r.patient.nhs_number for r in scenario(name).reports if r.patient.nhs_number]
    assert len(numbers) == 2 * len(expected)  # once in the CDA, once in the Pathways case


# -- accepted by the adaptor, valid against the schemas, valid FHIR --------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_is_accepted_with_default_settings(name: str, generated: dict[str, bytes]) -> None:
    raw = generated[name]
    message = validate(raw, Settings())
    assert message.warnings == ()
    assert message.interaction == scenario(name).interaction
    assert validate(raw).warnings == ()  # and by an allow-list made of the catalogue's addresses
    fresh = build_sample(scenario(name))  # the strict profile checks the Timestamp: a sample written just now
    assert validate(fresh, ALLOWING.replace(soap_validation_enabled=True)).username


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_is_accepted_with_the_schema_pack(name: str, generated: dict[str, bytes]) -> None:
    settings = schema_settings(itk_ods_code_list=ALLOW.ods_codes, itk_dos_id_list=ALLOW.dos_ids)
    message = validate(generated[name], settings)
    assert [w for w in message.warnings if not w.startswith("D5:")] == []  # D5 needs an optional XSLT 2.0 engine


@pytest.mark.parametrize("name", NAMES)
def test_every_document_and_pathways_case_is_schema_valid(name: str, generated: dict[str, bytes]) -> None:
    """Rule D4 checks only the selected document: here every document of the set, and every Pathways case."""
    schema_dir = str(require_shared("schemas"))
    cda, pathways = schemas.cda_schema(schema_dir), schemas.pathways_schema(schema_dir)
    assert cda is not None and pathways is not None
    for document in documents(generated[name]):
        assert cda.errors(document) == []
        cases = pathways_cases(document)
        assert len(cases) == 1
        assert pathways.errors(cases[0]) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_converts_to_a_valid_stu3_bundle(name: str, generated: dict[str, bytes]) -> None:
    bundle = convert(generated[name])
    assert validate_bundle(bundle) == []
    header = one(bundle, "MessageHeader")
    assert header["id"] == etree.fromstring(generated[name]).findtext(f"{{{SOAP11}}}Header/{{{WSA}}}MessageID")
    # Every sample carries a Pathways triage, a disposition, care advice and the reported condition.
    assert resources(bundle, "QuestionnaireResponse") and resources(bundle, "CarePlan")
    assert one(bundle, "ProcedureRequest")["code"]["coding"][0]["code"].startswith("Dx")
    assert one(bundle, "Observation")["valueString"]
    assert one(bundle, "Condition")["code"]["coding"][0]["system"] == "2.16.840.1.113883.2.1.3.2.4.15"


# -- what each scenario is for ---------------------------------------------------------------------------------


def test_dispositions_and_conditions_vary(generated: dict[str, bytes]) -> None:
    bundles = [convert(generated[name]) for name in NAMES]
    dispositions = {one(b, "ProcedureRequest")["code"]["coding"][0]["code"] for b in bundles}
    conditions = {one(b, "Condition")["code"]["coding"][0]["code"] for b in bundles}
    assert len(dispositions) >= 8 and len(conditions) >= 10


def test_gp_referral(generated: dict[str, bytes]) -> None:
    bundle = convert(generated["gp-referral"])
    header = one(bundle, "MessageHeader")
    assert header["event"]["code"] == "referral-1"
    # DoS id listed first in the header: the endpoint still starts with the ODS code.
    assert header["destination"][0]["endpoint"] == "urn:nhs-uk:addressing:ods:XGP101:DOSServiceID:9001101"
    participants = one(bundle, "Encounter")["participant"]
    assert "INF" in [p["type"][0].get("text") for p in participants]  # the district nurse (a Practitioner)
    assert "ATND" in [c["code"] for p in participants for c in p["type"][0].get("coding", [])]
    [contact] = resources(bundle, "RelatedPerson")
    assert contact["relationship"]["coding"][0]["code"] == "C"  # emergency contact
    patient = one(bundle, "Patient")
    assert patient["maritalStatus"]["coding"][0]["code"] == "W"
    assert patient["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "A"
    consent = one(bundle, "Consent")
    assert consent["action"][0]["coding"][0]["code"] == "425691002" and "dataPeriod" in consent


def test_ed_referral(generated: dict[str, bytes]) -> None:
    bundle = convert(generated["ed-referral"])
    referral = one(bundle, "ReferralRequest")
    targets = [by_reference(bundle, r)["resourceType"] for r in referral["recipient"]]
    assert targets == ["Practitioner", "HealthcareService"]  # the REFT participant, then the PRCP recipient
    assert len(resources(bundle, "HealthcareService")) == 1  # the TRC copy recipient is not a service
    kinds = [p["type"][0].get("text") for p in one(bundle, "Encounter")["participant"]]
    assert "ENT" in kinds and "Informant" in kinds  # data enterer, spouse


def test_ooh_referral_books_an_appointment(generated: dict[str, bytes]) -> None:
    bundle = convert(generated["ooh-utc-referral"])
    appointment = one(bundle, "Appointment")
    assert one(bundle, "Encounter")["appointment"]["reference"] == next(
        e["fullUrl"] for e in bundle["entry"] if e["resource"] is appointment
    )
    actors = [by_reference(bundle, p["actor"])["resourceType"] for p in appointment["participant"]]
    assert actors == ["Patient", "Location"]
    callback = one(bundle, "Encounter")["participant"][0]
    assert callback["type"][0]["text"] == "CALLBCK" and callback["period"]["end"] > callback["period"]["start"]
    assert one(bundle, "Patient")["contact"][0]["name"]["given"] == ["Hannah"]  # the guardian


@pytest.mark.parametrize("name", ["copy-for-information", "ambulance-callout-copy"])
def test_copies_are_discharge_details(name: str, generated: dict[str, bytes]) -> None:
    bundle = convert(generated[name])
    assert one(bundle, "MessageHeader")["event"]["code"] == "discharge-details-1"
    assert one(bundle, "Encounter")["type"][0]["text"] == "111 Encounter Copy for Information"


def test_copy_for_information_replaces_an_earlier_version(generated: dict[str, bytes]) -> None:
    composition = one(convert(generated["copy-for-information"]), "Composition")
    assert composition["relatesTo"][0]["code"] == "replaces"


def test_ambulance_copy_has_the_incident_location(generated: dict[str, bytes]) -> None:
    bundle = convert(generated["ambulance-callout-copy"])
    assert one(bundle, "MessageHeader")["destination"][0]["endpoint"] == "urn:nhs-uk:addressing:ods:XGP101"
    incident = [
        by_reference(bundle, loc["location"])
        for loc in one(bundle, "Encounter")["location"]
        if loc["status"] == "completed"
    ]
    assert incident[0]["name"] == "Incident Location" and incident[0]["address"]["text"]


def test_safeguarding_referral(generated: dict[str, bytes]) -> None:
    raw = generated["safeguarding-referral"]
    assert validate(raw).event == "referral-1"
    bundle = convert(raw)
    assert one(bundle, "Composition")["confidentiality"] == "R"
    guardian = by_reference(bundle, one(bundle, "Patient")["contact"][0]["organization"])
    assert guardian["name"] == "Sampleshire County Council Children's Services"
    assert "action" not in one(bundle, "Consent")  # shared under the safeguarding duty, no consent
    titles = [s.get("title") for top in one(bundle, "Composition")["section"] for s in top.get("section", [])]
    assert "Safeguarding Concern" in titles


def test_repeat_caller_maps_the_newest_document(generated: dict[str, bytes]) -> None:
    raw = generated["repeat-caller"]
    message = validate(raw)
    times = [d.find("hl7:effectiveTime", NS).get("value") for d in message.documents]
    assert len(times) == 3 and len(set(times)) == 3
    newest = max(range(3), key=lambda i: datetime.strptime(times[i], "%Y%m%d%H%M%S%z"))
    assert newest == 1  # not the last payload
    assert message.selected is message.documents[newest]
    bundle = convert(raw)
    stamp = datetime.strptime(times[newest], "%Y%m%d%H%M%S%z").astimezone(UTC)
    assert one(bundle, "MessageHeader")["timestamp"] == stamp.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    assert one(bundle, "ProcedureRequest")["code"]["coding"][0]["code"] == "Dx05"  # the newest disposition


def test_patient_without_nhs_number(generated: dict[str, bytes]) -> None:
    patient = one(convert(generated["no-nhs-number"]), "Patient")
    assert "identifier" not in patient and "generalPractitioner" not in patient
    assert patient["language"] == "fr" and patient["address"][0]["use"] == "temp"


def test_practice_with_two_locations(generated: dict[str, bytes]) -> None:
    raw = generated["two-locations"]
    message = validate(raw)
    assert message.ods_codes == ("XGP501", "XGP502") and message.dos_ids == ("9005501", "9005502")
    branch_only = Settings(itk_dos_id_list=("9005502",))
    assert validate(raw, branch_only).dos_ids  # one matching address accepts the message

    bundle = convert(raw)
    assert one(bundle, "MessageHeader")["destination"] == [
        {"endpoint": "urn:nhs-uk:addressing:ods:XGP501:DOSServiceID:9005501"}
    ]
    services = resources(bundle, "HealthcareService")
    providers = [by_reference(bundle, s["providedBy"]) for s in services]
    assert [p["identifier"][0]["value"] for p in providers] == ["XGP501", "XGP502"]
    locations = [by_reference(bundle, s["location"][0]) for s in services]
    assert [loc["address"]["postalCode"] for loc in locations] == ["XM5 1MG", "XM5 7RB"]
    gp = by_reference(bundle, one(bundle, "Patient")["generalPractitioner"][0])
    assert gp["identifier"][0]["value"] == "XGP502"
    assert by_reference(bundle, gp["partOf"])["identifier"][0]["value"] == "XGP501"


@pytest.mark.parametrize(
    ("now", "local"),
    [
        (datetime(2025, 7, 1, 12, 0, tzinfo=UTC), "20250701123000"),  # British Summer Time: local = UTC + 1
        (datetime(2025, 1, 15, 12, 0, tzinfo=UTC), "20250115113000"),  # winter: local = UTC
    ],
)
def test_effective_time_without_offset_is_london_time(now: datetime, local: str) -> None:
    raw = build_sample(scenario("no-offset"), now=now)
    [document] = documents(raw)
    assert document.find("hl7:effectiveTime", NS).get("value") == local
    for element in document.iter(f"{{{HL7}}}low", f"{{{HL7}}}high", f"{{{HL7}}}time"):
        assert re.fullmatch(r"\d{14}", element.get("value", "")), element.get("value")
    [case] = pathways_cases(document)
    assert re.fullmatch(r"[\d-]{10}T[\d:]{8}", case.findtext("pw:caseReceiveEnd", namespaces=PW) or "")

    bundle = convert(raw)
    written = now - timedelta(minutes=scenario("no-offset").reports[0].minutes_ago)
    assert one(bundle, "MessageHeader")["timestamp"] == written.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    assert datetime.strptime(local, "%Y%m%d%H%M%S").replace(tzinfo=LONDON) == written


def test_several_triages_give_pairs_for_every_line(generated: dict[str, bytes]) -> None:
    raw = generated["several-triages"]
    [document] = documents(raw)
    [case] = pathways_cases(document)
    triages = case.findall("pw:pathwayDetails/pw:pathwayTriageDetails/pw:pathwayTriage", PW)
    lines = [len(t.findall("pw:triageLineDetails/pw:triageLine", PW)) for t in triages]
    assert len(triages) == 3

    bundle = convert(raw)
    questionnaires = resources(bundle, "Questionnaire")
    assert len(resources(bundle, "QuestionnaireResponse")) == len(questionnaires) == sum(lines)
    publishers = [q["publisher"] for q in questionnaires]
    assert publishers[: lines[0]] == ["User ID: 'SYN0302' User name: 'PRETEND, Riley' User skill set: 'T1'"] * lines[0]
    assert set(publishers[lines[0] :]) == {"User ID: 'SYN0301' User name: 'IMAGINARY, Casey' User skill set: 'T3'"}
    assert len(resources(bundle, "PractitionerRole")) == 2  # two authors
    assert len(resources(bundle, "CarePlan")) == 2  # advice from the adviser and from the clinician


# -- generation --------------------------------------------------------------------------------------------------


def _ids(raw: bytes) -> set[str]:
    root = etree.fromstring(raw)
    values = {root.findtext(f"{{{SOAP11}}}Header/{{{WSA}}}MessageID") or ""}
    values |= {e.get("trackingid", "") for e in root.iter(f"{{{ITK}}}header")}
    values |= {e.get("id", "") for e in root.iter(f"{{{ITK}}}payload")}
    values |= {e.get("root", "") for d in documents(raw) for e in d.iterfind("hl7:id", NS)}
    return values


@pytest.mark.parametrize("name", NAMES)
def test_regenerating_gives_fresh_ids_and_dates_with_the_same_structure(name: str) -> None:
    item = scenario(name)
    now = datetime.now(UTC)
    first, second = build_sample(item, now=now), build_sample(item, now=now + timedelta(days=3))
    assert shape(first) == shape(second)
    assert not _ids(first) & _ids(second)
    assert documents(first)[0].find("hl7:effectiveTime", NS).get("value") != documents(second)[0].find(
        "hl7:effectiveTime", NS
    ).get("value")


def test_documents_are_written_relative_to_the_generation_time() -> None:
    now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    [document] = documents(build_sample(scenario("gp-referral"), now=now))
    assert document.find("hl7:effectiveTime", NS).get("value") == "20250303083000+0000"


def test_index_lists_every_scenario_and_the_allow_list() -> None:
    index = index_markdown()
    for item in SCENARIOS:
        assert f"[`{item.file_name}`]({item.file_name})" in index
    assert f"PEM111_ITK_ODS_CODE_LIST={','.join(ALLOW.ods_codes)}" in index
    assert "9005502" in ALLOW.dos_ids and "XGP502" in ALLOW.ods_codes


FILES = [s.file_name for s in SCENARIOS] + [n.file_name for n in NULLIFICATIONS]


def test_samples_command_writes_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "mine.xml").write_text("<x/>")
    result = CliRunner().invoke(samples_command, ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([INDEX_FILE, "mine.xml", *FILES])
    assert result.stdout.splitlines() == [str(out / name) for name in FILES] + [str(out / INDEX_FILE)]
    assert f"{len(FILES)} samples written" in result.stderr
    assert "mine.xml is not in the catalogue" in result.stderr
    assert (out / INDEX_FILE).read_text(encoding="utf-8") == index_markdown()


def test_samples_command_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(samples_command, ["--out", str(blocker / "sub")])
    assert result.exit_code == 2 and result.stderr.startswith("Error: cannot write to")


# -- the committed samples/ folder -----------------------------------------------------------------------------


def committed() -> Iterator[tuple[Scenario, Path]]:
    for item in SCENARIOS:
        yield item, SAMPLES_DIR / item.file_name


def test_committed_folder_has_exactly_the_catalogue() -> None:
    assert sorted(p.name for p in SAMPLES_DIR.glob("*.xml")) == sorted(FILES)
    assert (SAMPLES_DIR / INDEX_FILE).read_text(encoding="utf-8") == index_markdown(), (
        "samples/README.md is out of date: run `nhs111 samples --out samples/`"
    )


@pytest.mark.parametrize("name", NAMES)
def test_committed_sample_matches_the_catalogue(name: str) -> None:
    """Same elements and attributes as a fresh generation (only ids, times and texts may differ)."""
    path = SAMPLES_DIR / scenario(name).file_name
    assert shape(path.read_bytes()) == shape(build_sample(scenario(name))), (
        f"{path} is out of date: run `nhs111 samples --out samples/`"
    )
    assert validate(path.read_bytes()).warnings == ()


# -- nullifications --------------------------------------------------------------------------------------------


def _document(raw: bytes) -> etree._Element:
    [document] = documents(raw)
    return document


@pytest.mark.parametrize("item", NULLIFICATIONS, ids=lambda n: n.name)
def test_a_nullification_withdraws_the_document_of_its_sample(item: Nullification) -> None:
    """Accepted as any message (with the schema pack too: D4), from the same sender to the same recipients, and
    naming its sample's document by id, setId and version, with its reason, author and a later time."""
    original, nullification = build_pair(item)
    message = validate(nullification)
    assert message.is_nullification and message.warnings == ()
    settings = schema_settings(itk_ods_code_list=ALLOW.ods_codes, itk_dos_id_list=ALLOW.dos_ids)
    assert [w for w in validate(nullification, settings).warnings if not w.startswith("D5:")] == []
    withdrawn = validate(original)
    assert (message.addresses, message.sender) == (withdrawn.addresses, withdrawn.sender)

    read = read_nullification(message.selected)
    keys = document_keys(withdrawn.selected)
    assert read.withdraws == keys and read.document.set_id == keys.set_id
    assert read.document.version == (keys.version or 0) + 1 and read.document.document_id != keys.document_id
    assert (read.reason_code, read.reason_display) == item.reason and read.reason_text == item.reason_text
    assert read.author and item.author.name.family in read.author
    written = datetime.strptime(_document(original).find("hl7:effectiveTime", NS).get("value"), "%Y%m%d%H%M%S%z")
    assert read.effective_at == written + timedelta(minutes=item.minutes_later)


def test_generation_pairs_each_nullification_with_the_file_it_withdraws(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    generate(folder)
    for item in NULLIFICATIONS:
        withdrawn = _document((folder / scenario(item.withdraws).file_name).read_bytes())
        nullification = read_nullification(_document((folder / item.file_name).read_bytes()))
        assert nullification.withdraws == document_keys(withdrawn)
    assert f"[`{NULLIFICATIONS[0].file_name}`]" in index_markdown()


@pytest.mark.parametrize("item", NULLIFICATIONS, ids=lambda n: n.name)
def test_committed_nullification_withdraws_the_committed_sample(item: Nullification) -> None:
    path = SAMPLES_DIR / item.file_name
    _, fresh = build_pair(item)
    assert shape(path.read_bytes()) == shape(fresh), f"{path} is out of date: run `nhs111 samples --out samples/`"
    withdrawn = _document((SAMPLES_DIR / scenario(item.withdraws).file_name).read_bytes())
    assert read_nullification(_document(path.read_bytes())).withdraws == document_keys(withdrawn)
    assert validate(path.read_bytes()).warnings == ()
