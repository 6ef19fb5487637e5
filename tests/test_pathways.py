"""Pathways triage → QuestionnaireResponse/Questionnaire pairs (mapping.md 3.18, 4.3, 4.4, 6.10).

Every case here is synthetic: XML built in the test, base64-encoded into the ObservationMedia entry of a
minimal CDA document.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from lxml import etree

from mappings.context import EnvelopeFields, MappingContext
from mappings.hl7 import Element
from mappings.questionnaire import map_triage, read_pathways_case

PW = "http://nhspathways.org/webservices/pathways/pathwaysCase"
SUBJECT = {"resourceType": "Patient", "id": "00000000-0000-4000-8000-000000000001"}
ENCOUNTER = {"resourceType": "Encounter", "id": "00000000-0000-4000-8000-000000000002"}


# -- builders ------------------------------------------------------------------------------------------------


def answer(text: str | None, selected: str | None = "false") -> str:
    attribute = f' selected="{selected}"' if selected is not None else ""
    text_element = "" if text is None else f"<text>{text}</text>"
    return f"<answer{attribute}>{text_element}<rationale/></answer>"


def question(
    question_id: str = "Tx1",
    text: str | None = "Is it bad?",
    answers: tuple[str, ...] = (),
    order_no: str = "3",
) -> str:
    text_element = "" if text is None else f"<questionText>{text}</questionText>"
    return (
        "<question><triageLogicId><pathwayVersion><major>1</major><minor>0</minor><subRevision>0</subRevision>"
        f"</pathwayVersion><pathwayId>PW1</pathwayId><pathwayOrderNo>{order_no}</pathwayOrderNo></triageLogicId>"
        f"<questionId>{question_id}</questionId>{text_element}<answers>{''.join(answers)}</answers></question>"
    )


def line(question_xml: str = "") -> str:
    return (
        "<triageLine><start>2021-04-06T11:00:00Z</start><finish>2021-04-06T11:00:01Z</finish>"
        f"<questionType>Question</questionType>{question_xml}</triageLine>"
    )


def user(user_id: str | None = "U1", name: str | None = "Ann Smith", skill: str | None = "T3") -> str:
    parts = [
        f"<id>{user_id}</id>" if user_id is not None else "",
        f"<name>{name}</name>" if name is not None else "",
        f"<skillSet>{skill}</skillSet>" if skill is not None else "",
    ]
    return f"<user>{''.join(parts)}</user>"


def triage(lines: tuple[str, ...] = (), user_xml: str | None = None) -> str:
    return (
        "<pathwayTriage><start>2021-04-06T11:00:00Z</start><finish>2021-04-06T11:30:00Z</finish>"
        f"{user() if user_xml is None else user_xml}"
        f"<triageLineDetails>{''.join(lines)}</triageLineDetails></pathwayTriage>"
    )


def case(
    triages: tuple[str, ...] = (),
    end: str | None = "2021-04-06T12:33:34.96328+01:00",
    case_id: str | None = "case-1",
    country: str | None = "England",
    phone: str | None = "0111 111 1111",
) -> str:
    end_element = "" if end is None else f"<caseReceiveEnd>{end}</caseReceiveEnd>"
    case_id_element = "" if case_id is None else f"<caseId>{case_id}</caseId>"
    country_element = (
        "" if country is None else f"<address><country><name>{country}</name></country></address>"
    )
    phone_element = (
        f"<contactDetails><caller><phone><number>{phone}</number></phone></caller></contactDetails>"
        if phone is not None
        else ""
    )
    return (
        f'<PathwaysCase xmlns="{PW}"><serviceDestination><code>X</code></serviceDestination>'
        f"<caseReceiveStart>2021-04-06T11:00:00Z</caseReceiveStart>{end_element}"
        f"<caseDetails><caseRef>1</caseRef>{case_id_element}{country_element}{phone_element}</caseDetails>"
        f"<pathwayDetails><pathwayTriageDetails>{''.join(triages)}</pathwayTriageDetails></pathwayDetails>"
        "</PathwaysCase>"
    )


def encode(xml: str) -> str:
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


def document(media_value: str | None, extension: str = "COCD_TP146002GB01#ObservationMedia") -> Element:
    """A minimal ClinicalDocument whose first top-level entry carries ``media_value`` as ObservationMedia."""
    entry = ""
    if media_value is not None:
        entry = (
            '<entry><npfitlc:contentId root="2.16.840.1.113883.2.1.3.2.4.18.16" '
            f'extension="{extension}"/><observationMedia classCode="OBS" moodCode="EVN">'
            f'<value representation="B64" mediaType="text/xml">{media_value}</value>'
            "</observationMedia></entry>"
        )
    xml = (
        '<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:npfitlc="NPFIT:HL7:Localisation">'
        f"<component><structuredBody><component><section>{entry}</section></component></structuredBody>"
        "</component></ClinicalDocument>"
    )
    return etree.fromstring(xml)


def context(doc: Element) -> MappingContext:
    return MappingContext(
        document=doc,
        envelope=EnvelopeFields(message_id="M", interaction="urn:nhs-itk:interaction:primaryX"),
        now=datetime(2024, 1, 1, tzinfo=UTC),
    )


def pairs_for(case_xml: str) -> list[tuple[dict, dict]]:
    return map_triage(context(document(encode(case_xml))), SUBJECT, ENCOUNTER)


def one_line(question_xml: str = "", **case_parts) -> list[tuple[dict, dict]]:
    """The pairs of a case with one triage of one line."""
    return pairs_for(case(triages=(triage(lines=(line(question_xml),)),), **case_parts))


# -- several triages -----------------------------------------------------------------------------------------


def test_every_pathway_triage_gives_pairs_for_all_its_lines_in_order():
    pairs = pairs_for(
        case(
            triages=(
                triage((line(question("A1")), line(question("A2"))), user_xml=user("U1", "First", "T1")),
                triage(lines=(line(question("B1")),), user_xml=user("U2", "Second", "T6")),
            )
        )
    )
    assert [response["item"][0]["linkId"] for response, _ in pairs] == ["A1", "A2", "B1"]
    # Each Questionnaire's publisher comes from its own triage's user (6.10).
    assert [questionnaire["publisher"] for _, questionnaire in pairs] == [
        "User ID: 'U1' User name: 'First' User skill set: 'T1'",
        "User ID: 'U1' User name: 'First' User skill set: 'T1'",
        "User ID: 'U2' User name: 'Second' User skill set: 'Unknown'",
    ]


def test_pair_structure_and_references():
    [(response, questionnaire)] = one_line(question("Tx9", "Pain?", (answer("yes", "true"), answer("no"))))
    assert response == {
        "resourceType": "QuestionnaireResponse",
        "id": response["id"],
        "identifier": {"value": "case-1"},
        "questionnaire": {"reference": f"urn:uuid:{questionnaire['id']}"},
        "status": "completed",
        "subject": {"reference": f"urn:uuid:{SUBJECT['id']}"},
        "context": {"reference": f"urn:uuid:{ENCOUNTER['id']}"},
        "authored": "2021-04-06T11:33:34+00:00",
        "item": [{"linkId": "Tx9", "text": "Pain?", "answer": [{"valueString": "yes"}]}],
    }
    assert questionnaire == {
        "resourceType": "Questionnaire",
        "id": questionnaire["id"],
        "identifier": [{"value": "case-1"}],
        "version": "2021-04-06T11:33:34.963Z",
        "status": "active",
        "experimental": False,
        "date": "2021-04-06T11:33:34+00:00",
        "publisher": "User ID: 'U1' User name: 'Ann Smith' User skill set: 'T3'",
        "lastReviewDate": "2021-04-06",
        "jurisdiction": [{"text": "England"}],
        "contact": [{"telecom": [{"system": "phone", "value": "0111 111 1111"}]}],
        "subjectType": ["Patient"],
        "item": [
            {
                "linkId": "case-1",
                "prefix": "3",
                "text": "Pain?",
                "type": "choice",
                "required": True,
                "repeats": False,
                "option": [{"valueString": "yes, Selected: true"}, {"valueString": "no, Selected: false"}],
            }
        ],
    }
    assert response["id"] != questionnaire["id"]


def test_without_subject_the_response_has_no_subject():
    doc = document(encode(case(triages=(triage(lines=(line(),)),))))
    [(response, _)] = map_triage(context(doc), None, ENCOUNTER)
    assert "subject" not in response


# -- booleans (4.4) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("0", False),
        (None, False),  # a missing attribute is false
    ],
)
def test_selected_is_read_case_insensitively(selected, expected):
    [(response, questionnaire)] = one_line(question(answers=(answer("Yes", selected),)))
    assert questionnaire["item"][0]["option"] == [{"valueString": f"Yes, Selected: {str(expected).lower()}"}]
    assert ("answer" in response["item"][0]) is expected


def test_response_answer_is_the_last_selected_answer_with_text():
    answers = (answer("first", "True"), answer("second", "1"), answer("   ", "true"), answer(None, "true"))
    [(response, questionnaire)] = one_line(question(answers=answers))
    assert response["item"][0]["answer"] == [{"valueString": "second"}]
    # Every offered answer is an option, a missing or empty text reading "".
    assert [o["valueString"] for o in questionnaire["item"][0]["option"]] == [
        "first, Selected: true",
        "second, Selected: true",
        "   , Selected: true",
        ", Selected: true",
    ]


# -- caseReceiveEnd (4.3) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "authored", "version"),
    [
        # no zone: Europe/London, summer time (BST = UTC+1)
        ("2021-08-03T14:07:14", "2021-08-03T13:07:14+00:00", "2021-08-03T13:07:14.000Z"),
        # no zone: Europe/London, winter time (GMT = UTC)
        ("2021-01-15T14:07:14", "2021-01-15T14:07:14+00:00", "2021-01-15T14:07:14.000Z"),
        # fractions are truncated, never rounded
        ("2022-03-16T14:05:15.0835769Z", "2022-03-16T14:05:15+00:00", "2022-03-16T14:05:15.083Z"),
        ("2021-04-06T12:33:34.99999+01:00", "2021-04-06T11:33:34+00:00", "2021-04-06T11:33:34.999Z"),
        # the UTC date, not the local one
        ("2021-04-07T00:30:00+01:00", "2021-04-06T23:30:00+00:00", "2021-04-06T23:30:00.000Z"),
    ],
)
def test_case_receive_end_formats(end, authored, version):
    [(response, questionnaire)] = one_line(end=end)
    assert response["authored"] == authored
    assert questionnaire["date"] == authored
    assert questionnaire["version"] == version
    assert questionnaire["lastReviewDate"] == authored[:10]  # the UTC date


@pytest.mark.parametrize("end", [None, "", "  "])
def test_absent_or_empty_case_receive_end_leaves_the_dates_out(end):
    [(response, questionnaire)] = one_line(end=end)
    assert "authored" not in response
    assert not {"version", "date", "lastReviewDate"} & questionnaire.keys()


# -- publisher -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_xml", "publisher"),
    [
        (user("1", "A", "T1"), "User ID: '1' User name: 'A' User skill set: 'T1'"),
        (user("1", "A", "T2"), "User ID: '1' User name: 'A' User skill set: 'T2'"),
        (user("1", "A", "T4"), "User ID: '1' User name: 'A' User skill set: 'T4'"),
        (
            user("562090462100", "NAIRN, Andrew", "T6"),  # tpp-ooh-T6-skillset
            "User ID: '562090462100' User name: 'NAIRN, Andrew' User skill set: 'Unknown'",
        ),
        (user("1", "A", ""), "User ID: '1' User name: 'A' User skill set: 'Unknown'"),
        (user("1", "A", "t3"), "User ID: '1' User name: 'A' User skill set: 'Unknown'"),
        # absent parts are left out; the trailing space stays when the skill set is absent
        (user("1", "A", None), "User ID: '1' User name: 'A' "),
        (user(None, "A", "T3"), "User name: 'A' User skill set: 'T3'"),
        (user("1", None, None), "User ID: '1' "),
        (user(None, None, "T5"), "User skill set: 'Unknown'"),
        (user(None, None, None), "N/A"),
        ("", "N/A"),  # no pw:user at all
    ],
)
def test_publisher(user_xml, publisher):
    [(_, questionnaire)] = pairs_for(case(triages=(triage(lines=(line(),), user_xml=user_xml),)))
    assert questionnaire["publisher"] == publisher


# -- lines and questions -------------------------------------------------------------------------------------


def test_lines_without_question_give_a_pair_without_item():
    [(response, questionnaire)] = one_line("")
    assert "item" not in response
    assert "item" not in questionnaire
    assert response["questionnaire"] == {"reference": f"urn:uuid:{questionnaire['id']}"}


def test_blank_question_id_and_empty_question_text():
    [(response, questionnaire)] = one_line(question("", "", (answer("", "false"),), order_no="0"))
    # primary-emergency's first line, exactly
    assert response["item"] == [{"linkId": "N/A"}]
    assert questionnaire["item"] == [
        {
            "linkId": "case-1",
            "prefix": "0",
            "type": "choice",
            "required": True,
            "repeats": False,
            "option": [{"valueString": ", Selected: false"}],
        }
    ]


def test_missing_question_text_reads_n_a_in_the_questionnaire_only():
    [(response, questionnaire)] = one_line(question("Q1", None))
    assert "text" not in response["item"][0]
    assert questionnaire["item"][0]["text"] == "N/A"


def test_without_case_id_the_items_are_linked_as_n_a():
    [(response, questionnaire)] = one_line(question("Q1"), case_id=None)
    assert "identifier" not in response
    assert "identifier" not in questionnaire
    assert questionnaire["item"][0]["linkId"] == "N/A"


def test_optional_case_details_absent():
    [(_, questionnaire)] = one_line(country=None, phone=None)
    assert "jurisdiction" not in questionnaire
    assert "contact" not in questionnaire
    [(_, questionnaire)] = one_line(country="", phone="")
    assert "jurisdiction" not in questionnaire
    assert "contact" not in questionnaire


def test_entities_in_the_case_are_decoded():
    [(response, _)] = one_line(question("Q", "A &amp; B &lt;C&gt;", (answer("x &amp; y", "true"),)))
    assert response["item"][0]["text"] == "A & B <C>"
    assert response["item"][0]["answer"] == [{"valueString": "x & y"}]


# -- the attachment itself -----------------------------------------------------------------------------------

GOOD_CASE = case(triages=(triage(lines=(line(question()),)),))


def test_base64_with_line_breaks_missing_padding_and_stray_characters():
    encoded = encode(GOOD_CASE).rstrip("=")
    wrapped = "\n   ".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    doc = document(f"\n  {wrapped}\n  *")
    assert len(map_triage(context(doc), SUBJECT, ENCOUNTER)) == 1


def test_only_the_first_observation_media_entry_is_read():
    doc = document(encode("<not-pathways/>"))
    section = doc.find(".//{urn:hl7-org:v3}section")
    good = document(encode(GOOD_CASE)).find(".//{urn:hl7-org:v3}entry")
    section.append(good)
    assert map_triage(context(doc), SUBJECT, ENCOUNTER) == []


def test_utf8_case_with_declaration():
    xml = '<?xml version="1.0" encoding="UTF-8"?>' + case(
        triages=(triage(lines=(line(question("Q", "Douleur à la tête?")),)),)
    )
    [(response, _)] = pairs_for(xml)
    assert response["item"][0]["text"] == "Douleur à la tête?"


@pytest.mark.parametrize(
    "media_value",
    [
        None,  # no ObservationMedia entry
        "",  # empty value
        "@@@@",  # nothing base64 left
        "QUJDRA=x",  # "=" ends the data: "ABCD", not XML
        "QUJDRE",  # unpadded: decodes, but not XML
        "A",  # one stray character cannot be base64
        encode("<PathwaysCase"),  # not well-formed
        encode("<case xmlns='http://example.org'/>"),  # another root element
        encode("<PathwaysCase/>"),  # the Pathways root outside its namespace
        encode(case(triages=())),  # no pathwayTriage
        encode(case(triages=(triage(lines=(line(),)),), end="yesterday")),  # an unreadable caseReceiveEnd
        base64.b64encode(GOOD_CASE.encode("utf-16")).decode(),  # not UTF-8
        encode('<!DOCTYPE x [<!ENTITY a "aaaa">]>' + GOOD_CASE),  # a DTD is never accepted
    ],
)
def test_unreadable_attachment_gives_no_pairs_and_no_error(media_value):
    doc = document(media_value)
    assert map_triage(context(doc), SUBJECT, ENCOUNTER) == []


def test_entry_of_another_template_is_not_read():
    doc = document(encode(GOOD_CASE), extension="COCD_TP146050GB01#PermissionToView")
    assert read_pathways_case(doc) is None
    assert map_triage(context(doc), SUBJECT, ENCOUNTER) == []


def test_document_without_structured_body():
    doc = etree.fromstring(
        '<ClinicalDocument xmlns="urn:hl7-org:v3">'
        "<component><nonXMLBody><text>x</text></nonXMLBody></component></ClinicalDocument>"
    )
    assert map_triage(context(doc), SUBJECT, ENCOUNTER) == []
