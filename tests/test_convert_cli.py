"""``nhs111 convert FILE [--validate]``: the Bundle on stdout, and a one-line error with exit status 2 (never a
traceback) for input that cannot be converted.

The installed console script is run as a separate process, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_shared

PRIMARY_EMERGENCY = "primary-emergency-itk-request.xml"
INTERACTION = "urn:nhs-itk:interaction:primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("nhs111")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from adaptor.cli.commands import main; main()"]  # an environment without the script


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PEM111_")}
    environment.update(env or {})
    return subprocess.run(
        [*_command(), "convert", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


def _corpus_request() -> Path:
    return require_shared("corpus", "reference", PRIMARY_EMERGENCY)


# -- success ------------------------------------------------------------------------------------------------


def test_prints_the_bundle_as_json() -> None:
    result = run(str(_corpus_request()))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "message"
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["id"] == "2B77B3F5-3016-4A6D-821F-152CE420E58D"  # the request's wsa:MessageID


def test_validate_reports_a_valid_bundle() -> None:
    result = run("--validate", str(_corpus_request()))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resourceType"] == "Bundle"
    assert result.stderr.strip() == "valid FHIR STU3 Bundle"


def test_reads_standard_input_for_a_dash() -> None:
    result = run("-", stdin=_corpus_request().read_bytes())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entry"][0]["resource"]["id"] == "2B77B3F5-3016-4A6D-821F-152CE420E58D"


def test_settings_reach_the_bundle() -> None:
    env = {"PEM111_VERSION": "9.9.9", "PEM111_SOAP_SEND_TO": "https://receiver.example/itk"}
    result = run(str(_corpus_request()), env=env)
    assert result.returncode == 0, result.stderr
    resources = [entry["resource"] for entry in json.loads(result.stdout)["entry"]]
    (device,) = [r for r in resources if r["resourceType"] == "Device"]
    assert device["version"] == "9.9.9"
    assert resources[0]["source"]["endpoint"] == "https://receiver.example/itk"


# -- errors ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "absent.xml")), "absent.xml")


def test_not_xml(tmp_path: Path) -> None:
    path = tmp_path / "not.xml"
    path.write_text("this is not XML")
    assert_one_line_error(run(str(path)), "not.xml", "not well-formed XML")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_bytes(b"")
    assert_one_line_error(run(str(path)), "empty")


def test_xml_that_is_not_an_itk_message(tmp_path: Path) -> None:
    path = tmp_path / "other.xml"
    path.write_text("<report><line/></report>")
    assert_one_line_error(run(str(path)), "report", "not a SOAP Envelope")


def test_doctype_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dtd.xml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>')
    assert_one_line_error(run(str(path)), "DOCTYPE")


def test_distribution_envelope_without_a_clinical_document(tmp_path: Path) -> None:
    path = tmp_path / "no-document.xml"
    path.write_text(
        '<itk:DistributionEnvelope xmlns:itk="urn:nhs-itk:ns:201005"><itk:header>'
        f'<itk:handlingSpecification><itk:spec key="urn:nhs-itk:ns:201005:interaction" value="{INTERACTION}"/>'
        "</itk:handlingSpecification></itk:header>"
        '<itk:payloads count="1"><itk:payload id="p1"><note/></itk:payload></itk:payloads>'
        "</itk:DistributionEnvelope>"
    )
    assert_one_line_error(run(str(path)), "ClinicalDocument")


def test_soap_envelope_without_a_distribution_envelope(tmp_path: Path) -> None:
    path = tmp_path / "empty-body.xml"
    path.write_text('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>')
    assert_one_line_error(run(str(path)), "DistributionEnvelope")


def test_clinical_document_without_effective_time(tmp_path: Path) -> None:
    path = tmp_path / "no-time.xml"
    path.write_text('<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</title></ClinicalDocument>')
    assert_one_line_error(run(str(path)), "effectiveTime")


def test_clinical_document_with_an_invalid_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "bad-time.xml"
    path.write_text(
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><effectiveTime value="20220101120000+00"/>'
        '<componentOf><encompassingEncounter><effectiveTime><low value="yesterday"/></effectiveTime>'
        "</encompassingEncounter></componentOf></ClinicalDocument>"
    )
    assert_one_line_error(run(str(path)), "low")


@pytest.mark.parametrize("interaction", ["", "urn:nhs-itk:interaction:RequestAmbulanceDispatch-v2-0"])
def test_missing_or_unsupported_interaction(tmp_path: Path, interaction: str) -> None:
    path = tmp_path / "interaction.xml"
    spec = f'<itk:spec key="urn:nhs-itk:ns:201005:interaction" value="{interaction}"/>' if interaction else ""
    path.write_text(
        '<itk:DistributionEnvelope xmlns:itk="urn:nhs-itk:ns:201005"><itk:header>'
        f"<itk:handlingSpecification>{spec}</itk:handlingSpecification></itk:header>"
        '<itk:payloads count="1"><itk:payload id="p1"><ClinicalDocument xmlns="urn:hl7-org:v3">'
        '<effectiveTime value="20220101120000+00"/></ClinicalDocument></itk:payload></itk:payloads>'
        "</itk:DistributionEnvelope>"
    )
    assert_one_line_error(run(str(path)), "interaction")
