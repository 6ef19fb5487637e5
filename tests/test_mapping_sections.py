"""The section-derived resources: Composition, CarePlan, Consent, Condition, Observation, Appointment and the
Pathways QuestionnaireResponse/Questionnaire pairs (mapping.md 3.12-3.18, 4.8, 6.1, 6.8, 6.9).

Two kinds of test: each module run directly on every corpus document and compared, fact by fact (parity.py's
facts), with the same resource type in the reference Bundle; and synthetic documents for the rules the corpus
does not exercise (section order, missing parts, markup escaping, title matching).
"""

from __future__ import annotations

import collections
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import CORPUS_PAIRS, parity_tool, require_shared
from lxml import etree

from adaptor.delivery.conversion import read_request
from mappings.appointment import map_appointment
from mappings.care_plan import map_care_plans
from mappings.composition import map_composition, section_text
from mappings.condition import map_condition
from mappings.consent import map_consent
from mappings.context import EnvelopeFields, MappingContext
from mappings.hl7 import Element
from mappings.observation import is_reported_condition, map_observations
from mappings.questionnaire import map_triage

PAIRS = CORPUS_PAIRS
OWN_TYPES = (
    "Composition",
    "CarePlan",
    "Consent",
    "Condition",
    "QuestionnaireResponse",
    "Questionnaire",
    "Observation",
)
NOW = datetime(2024, 1, 1, tzinfo=UTC)


# -- corpus --------------------------------------------------------------------------------------------------


@dataclass
class CorpusPair:
    name: str
    ctx: MappingContext
    expected: dict[str, Any]

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        entries = self.expected["entry"]
        return [e["resource"] for e in entries if e["resource"]["resourceType"] == resource_type]

    def resolve(self, reference: dict[str, str]) -> dict[str, Any]:
        return next(e["resource"] for e in self.expected["entry"] if e["fullUrl"] == reference["reference"])


@functools.cache
def corpus_pair(name: str) -> CorpusPair:
    folder = require_shared("corpus", "reference")
    document, fields = read_request((folder / f"{name}-itk-request.xml").read_bytes())
    expected = json.loads((folder / f"{name}-fhir-result.json").read_text())
    return CorpusPair(name, MappingContext(document=document, envelope=fields, now=NOW), expected)


@functools.cache
def mapped(name: str) -> list[dict[str, Any]]:
    """Our resources of OWN_TYPES for a corpus pair, the modules fed with the reference Bundle's other
    resources (built by other modules and trusted here)."""
    pair = corpus_pair(name)
    ctx = pair.ctx
    [encounter] = pair.resources("Encounter")
    subject = pair.resolve(encounter["subject"])
    service_provider = pair.resolve(encounter["serviceProvider"])
    locations = [pair.resolve(location["location"]) for location in encounter.get("location", [])]
    managing = [pair.resolve(o["managingOrganization"]) for o in locations if "managingOrganization" in o]
    authors = [
        pair.resolve(participant["individual"])
        for participant in encounter["participant"]
        if participant["type"][0].get("coding", [{}])[0].get("code") == "PPRF"
    ]
    [referral_request] = pair.resources("ReferralRequest")

    triage = map_triage(ctx, subject, encounter)
    responses = [response for response, _ in triage]
    condition = map_condition(ctx, subject, encounter, responses)
    care_plans = map_care_plans(ctx, subject, encounter, condition, managing)
    composition = map_composition(ctx, subject, encounter, authors, care_plans, referral_request, responses)
    consent = map_consent(ctx, subject, encounter, service_provider)
    observations = map_observations(ctx, subject, encounter)
    pairs = [resource for both in triage for resource in both]
    return [composition, *care_plans, consent, condition, *pairs, *observations]


def fact_differences(name: str, resource_type: str) -> tuple[collections.Counter, collections.Counter]:
    """(missing, extra) facts of one resource type, after the documented known differences."""
    tools = parity_tool()
    pair = corpus_pair(name)
    others = [e for e in pair.expected["entry"] if e["resource"]["resourceType"] not in OWN_TYPES]
    ours = {"entry": others + [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in mapped(name)]}

    def of_type(bundle: dict[str, Any]) -> collections.Counter:
        return collections.Counter({k: n for k, n in tools.facts(bundle).items() if k[0] == resource_type})

    produced, expected = of_type(ours), of_type(pair.expected)
    missing, extra = expected - produced, produced - expected
    rules = tools.known_differences(str(require_shared("corpus", "reference")))
    tools.excuse(missing, rules, "missing", name)
    tools.excuse(extra, rules, "extra", name)
    return +missing, +extra


@pytest.mark.parametrize("resource_type", OWN_TYPES)
@pytest.mark.parametrize("name", PAIRS)
def test_corpus_facts(name, resource_type):
    missing, extra = fact_differences(name, resource_type)
    assert not missing and not extra, f"missing {sorted(missing.items())}\nextra {sorted(extra.items())}"


def test_corpus_primary_emergency_appointment():
    """6.1: the Appointment the reference references but never emits (its facts are excused in parity)."""
    pair = corpus_pair("primary-emergency")
    patient = pair.resources("Patient")[0]
    found = map_appointment(pair.ctx, patient)
    assert found is not None
    appointment, locations = found
    [location] = locations
    assert appointment["status"] == "booked"
    assert appointment["description"] == "Appointment Reference"
    assert " ".join(appointment["comment"].split()) == (
        "Date/Time: 01 June 2017 14:00 Location: CENTRAL LONDON COMMUNITY HEALTHCARE NHS TRUST "
        "Psychiatric Community Care Service"
    )
    assert appointment["reason"] == [{"text": "Patient convenience appointment"}]
    assert appointment["participant"] == [
        {"actor": {"reference": f"urn:uuid:{actor['id']}"}, "required": "required", "status": "accepted"}
        for actor in (patient, location)
    ]
    assert {k: v for k, v in location.items() if k != "id"} == {
        "resourceType": "Location",
        "name": "CENTRAL LONDON COMMUNITY HEALTHCARE NHS TRUST",
        "description": "Psychiatric Community Care Services",
        "address": {"use": "work", "line": ["Great George Street"], "city": "Leeds", "postalCode": "LE13EX"},
    }


@pytest.mark.parametrize("name", [n for n in PAIRS if n != "primary-emergency"])
def test_corpus_without_appointment_reference(name):
    pair = corpus_pair(name)
    assert map_appointment(pair.ctx, pair.resources("Patient")[0]) is None


def test_corpus_consent_div_is_the_composition_narrative():
    """6.8: Consent.text.div is the escaped markup of the Permission to View section, as in Composition."""
    resources = mapped("primary-emergency")
    [composition] = [r for r in resources if r["resourceType"] == "Composition"]
    [consent] = [r for r in resources if r["resourceType"] == "Consent"]
    [permission] = [s for s in composition["section"][0]["section"] if s.get("title") == "Permission to View"]
    assert consent["text"] == permission["text"]
    div = consent["text"]["div"]
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">&lt;table&gt;')
    assert "urn:hl7-org:v3" not in div and "<table" not in div


# -- synthetic documents -------------------------------------------------------------------------------------

SUBJECT = {"resourceType": "Patient", "id": "00000000-0000-4000-8000-000000000001"}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "00000000-0000-4000-8000-000000000002",
    "period": {"start": "2021-04-06T10:54:11+00:00", "end": "2021-04-06T11:33:27+00:00"},
}
CONDITION = {"resourceType": "Condition", "id": "00000000-0000-4000-8000-000000000003"}
PROVIDER = {"resourceType": "Organization", "id": "00000000-0000-4000-8000-000000000004"}
REFERRAL = {"resourceType": "ReferralRequest", "id": "00000000-0000-4000-8000-000000000005"}
SNOMED = "2.16.840.1.113883.2.1.3.2.4.15"
XHTML_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'


def ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"urn:uuid:{resource['id']}"}


def cda(body: str = "", *, header: str = "", structured: bool = True) -> Element:
    """A ClinicalDocument with ``body`` (top-level components) in a structuredBody."""
    content = f"<structuredBody>{body}</structuredBody>" if structured else body
    return etree.fromstring(
        '<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:npfitlc="NPFIT:HL7:Localisation" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<setId root="SET-1"/><effectiveTime value="20210406120000+0100"/>{header}'
        f"<component>{content}</component></ClinicalDocument>"
    )


def section(*parts: str, title: str | None = None, text: str | None = None, code: str | None = None) -> str:
    """A ``component/section``; ``parts`` are entries and child components, in order."""
    code_xml = f'<code code="{code}" codeSystem="{SNOMED}"/>' if code else ""
    title_xml = f"<title>{title}</title>" if title is not None else ""
    text_xml = f"<text>{text}</text>" if text is not None else ""
    return f"<component><section>{code_xml}{title_xml}{text_xml}{''.join(parts)}</section></component>"


def entry(template: str, content: str) -> str:
    return (
        f'<entry><npfitlc:contentId root="2.16.840.1.113883.2.1.3.2.4.18.16" extension="{template}"/>'
        f"{content}</entry>"
    )


def context(document: Element) -> MappingContext:
    return MappingContext(
        document=document,
        envelope=EnvelopeFields(message_id="M", interaction="urn:nhs-itk:interaction:primaryX"),
        now=NOW,
    )


def without_ids(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "id"}


# -- markup and div (4.8) ------------------------------------------------------------------------------------


def div_of(text_inner: str) -> str | None:
    """Composition/Consent narrative of a section whose ``hl7:text`` holds ``text_inner``."""
    element = etree.fromstring(
        '<section xmlns="urn:hl7-org:v3" xmlns:npfitlc="NPFIT:HL7:Localisation">'
        f"<text>{text_inner}</text></section>"
    )
    narrative = section_text(element)
    if narrative is None:
        return None
    assert narrative["status"] == "generated"
    assert narrative["div"].startswith(XHTML_DIV) and narrative["div"].endswith("</div>")
    return narrative["div"][len(XHTML_DIV) : -len("</div>")]


@pytest.mark.parametrize(
    ("text_inner", "escaped"),
    [
        # the spec's examples, verbatim (conformance-example-adastra-original)
        (
            "<content>&lt;CLEO Ref: 2100310450&gt; Test Call <br />more</content>",
            "&lt;content&gt;&amp;lt;CLEO Ref: 2100310450&amp;gt; Test Call &lt;br/&gt;more&lt;/content&gt;",
        ),
        (
            '<content styleCode="bold">x</content>',
            "&lt;content styleCode=&quot;bold&quot;&gt;x&lt;/content&gt;",
        ),
        # quotes, apostrophes and line breaks in text as is, then the div escape
        ('He said "it\'s"\nok &amp; fine', "He said &quot;it's&quot;\nok &amp;amp; fine"),
        # attribute values: & < > " escaped, then escaped again by the div
        (
            '<content ID="a&amp;b&lt;c&gt;d&quot;e\'f"/>',
            "&lt;content ID=&quot;a&amp;amp;b&amp;lt;c&amp;gt;d&amp;quot;e'f&quot;/&gt;",
        ),
        # attributes in code-point order of name; an element without child nodes is self-closed
        (
            '<td rowspan="2" colspan="1" ID="z"></td>',
            "&lt;td ID=&quot;z&quot; colspan=&quot;1&quot; rowspan=&quot;2&quot;/&gt;",
        ),
        # comments kept; CDATA written as escaped text
        (
            "<!-- note --><content><![CDATA[a < b]]></content>",
            "&lt;!-- note --&gt;&lt;content&gt;a &amp;lt; b&lt;/content&gt;",
        ),
        # Java trim: characters <= U+0020 only, so a no-break space survives
        ("\n\t  <br/>  \n", "&lt;br/&gt;"),
        ("\u00a0x\u00a0", "\u00a0x\u00a0"),
    ],
)
def test_section_markup_and_div(text_inner, escaped):
    assert div_of(text_inner) == escaped


@pytest.mark.parametrize("text_inner", ["", "   \n  ", "\t"])
def test_empty_markup_gives_no_text(text_inner):
    assert div_of(text_inner) is None


# -- Observation title (3.16) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title_xml", "matches"),
    [
        ("<title>Patient's Reported Condition</title>", True),
        ("<title>Patient’s Reported Condition</title>", True),  # any one character for the apostrophe
        ("<title>Patients Reported Condition</title>", False),  # "." is exactly one character
        ("<title>ComponentTitle - Patient's Reported Condition</title>", False),  # the whole title must match
        ("<title>Patient's Reported Condition </title>", False),
        ("<title>patient's reported condition</title>", False),  # case-sensitive
        ("<title><content>Patient's Reported Condition</content></title>", False),  # title starts with markup
        ("<title/>", False),
        ("", False),  # untitled
    ],
)
def test_reported_condition_title(title_xml, matches):
    element = etree.fromstring(f'<section xmlns="urn:hl7-org:v3">{title_xml}</section>')
    assert is_reported_condition(element) is matches


def test_observations_from_nested_sections_only_with_untrimmed_joined_contents():
    title = "Patient's Reported Condition"
    document = cda(
        section(
            section(title=title, text="<content>Test</content><content/><content></content>"),
            section(text="<content>untitled</content>"),
            section(title=title, text="loose text<br/>"),
            section(section(title=title, text="<content>too deep</content>")),
        )
        + section(title=title, text="<content>top level</content>")
    )
    observations = map_observations(context(document), SUBJECT, ENCOUNTER)
    assert [o.get("valueString") for o in observations] == ["Test\n\n", None]
    assert without_ids(observations[0]) == {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "33962009", "display": "Presenting complaint"}
            ]
        },
        "subject": ref(SUBJECT),
        "context": ref(ENCOUNTER),
        "valueString": "Test\n\n",
    }


# -- CarePlan (3.13) -----------------------------------------------------------------------------------------

ADVICE = "1052951000000105"


def test_care_plan_collection_order():
    """For each top-level section: its matching children, then the walk inside each child in turn."""
    document = cda(
        section(
            section(section(title="A1.1", code=ADVICE, text="<content>deep</content>"), title="A1"),
            section(title="A2", code=ADVICE, text="<content>first</content><content>second</content>"),
            section(title="A3", code=ADVICE),
        )
        # a matching top-level section is not collected, its matching child is
        + section(section(title="B1", code=ADVICE), title="B", code=ADVICE)
    )
    authors = [PROVIDER, {"resourceType": "Organization", "id": "00000000-0000-4000-8000-000000000009"}]
    plans = map_care_plans(context(document), SUBJECT, ENCOUNTER, CONDITION, authors)
    assert [plan["title"] for plan in plans] == ["A2", "A3", "A1.1", "B1"]
    assert without_ids(plans[0]) == {
        "resourceType": "CarePlan",
        "status": "completed",
        "intent": "plan",
        "title": "A2",
        "description": "first",
        "subject": ref(SUBJECT),
        "context": ref(ENCOUNTER),
        "period": ENCOUNTER["period"],
        "author": [ref(a) for a in authors],
        "addresses": [ref(CONDITION)],
    }
    assert plans[0]["period"] is not ENCOUNTER["period"]  # a copy
    assert "description" not in plans[1]


def test_care_plan_needs_the_snomed_code_system():
    document = cda(section(section('<code code="1052951000000105" codeSystem="2.16.1"/>', title="X")))
    assert map_care_plans(context(document), SUBJECT, ENCOUNTER, CONDITION, []) == []


def test_care_plan_without_period_or_authors():
    document = cda(section(section(title="Advice", code=ADVICE)))
    encounter = {"resourceType": "Encounter", "id": ENCOUNTER["id"]}
    [plan] = map_care_plans(context(document), None, encounter, CONDITION, [])
    assert not {"period", "author", "subject"} & plan.keys()


# -- Consent (3.14, 6.8) -------------------------------------------------------------------------------------

CONSENT_SECTION = "887031000000108"
SHARING = "Consent given for electronic record sharing"


def authorization(code: str) -> str:
    return f"<authorization><consent>{code}</consent></authorization>"


AUTHORIZATION = (
    authorization(f'<code code="425691002" codeSystem="{SNOMED}" displayName="{SHARING}"/>')
    + authorization('<code code="X1" codeSystem="1.2.3" displayName="Other"/>')
    + authorization('<code code="X2" codeSystem="1.2.3"/>')  # no displayName: no action
)


def permission(low: str, high: str) -> str:
    return entry(
        "COCD_TP146050GB01#PermissionToView",
        f'<observation><effectiveTime><low value="{low}"/><high value="{high}"/></effectiveTime>'
        "</observation>",
    )


def test_consent_fields_and_fixed_div():
    document = cda(
        section(
            permission("201105192000+00", "201105262000+00"),
            permission("201201010000+00", "201201020000+00"),
            entry("COCD_TP146050GB01#PermissionToView", "<observation/>"),  # no effectiveTime: skipped
            section('<id root="FIRST"/>', code=CONSENT_SECTION, text="<table><tr><td>old</td></tr></table>"),
            section('<id root="LAST"/>', code=CONSENT_SECTION),
            section(code=CONSENT_SECTION, text='<table><tr><td class="x">Permission</td></tr></table>'),
        ),
        header=AUTHORIZATION,
    )
    consent = map_consent(context(document), SUBJECT, ENCOUNTER, PROVIDER)
    assert without_ids(consent) == {
        "resourceType": "Consent",
        "text": {
            "status": "generated",
            "div": XHTML_DIV + "&lt;table&gt;&lt;tr&gt;&lt;td class=&quot;x&quot;&gt;Permission"
            "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;</div>",
        },
        "identifier": {"use": "usual", "value": "SET-1"},
        "status": "active",
        "patient": ref(SUBJECT),
        "period": ENCOUNTER["period"],
        "consentingParty": [ref(SUBJECT)],
        "action": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "425691002",
                        "display": SHARING,
                    }
                ],
                "text": SHARING,
            },
            {"coding": [{"system": "1.2.3", "code": "X1", "display": "Other"}], "text": "Other"},
        ],
        "organization": [ref(PROVIDER)],
        "sourceIdentifier": {"value": "LAST"},
        "policyRule": "http://hl7.org/fhir/ConsentPolicy/opt-out",
        "dataPeriod": {"start": "2012-01-01T00:00:00+00:00", "end": "2012-01-02T00:00:00+00:00"},
        "data": [{"meaning": "related", "reference": ref(ENCOUNTER)}],
    }


def test_consent_section_deeper_than_nested_is_ignored():
    document = cda(section(section(section('<id root="DEEP"/>', code=CONSENT_SECTION, text="deep"))))
    consent = map_consent(context(document), SUBJECT, ENCOUNTER, PROVIDER)
    assert not {"text", "sourceIdentifier", "dataPeriod", "action"} & consent.keys()


# -- Condition (3.12) ----------------------------------------------------------------------------------------


def discriminator(code: str, system: str, display: str) -> str:
    return entry(
        "COCD_TP146092GB01#ClinicalDiscriminator",
        f'<observation><value xsi:type="CV" code="{code}" codeSystem="{system}" displayName="{display}"/>'
        "</observation>",
    )


def test_condition_sources_in_any_section_order():
    document = cda(
        section(
            section('<languageCode code="en"/>', title="first"),
            entry(
                "X",
                '<encounter><text>Visit <b>one</b></text><effectiveTime value="201706011400+00"/>'
                "</encounter>",
            ),
            discriminator("22298006", SNOMED, "Myocardial infarction"),
            section('<languageCode code="fr"/><languageCode/>', title="second"),
        )
        + section(
            discriminator("Dx011", "2.16.840.1.113883.2.1.3.2.4.24", "heart attack"),
            discriminator("44054006", SNOMED, "Diabetes"),
            discriminator("Dx02", "2.16.1", "later, other system"),
            entry("Y", '<encounter><effectiveTime value="20200101"/></encounter>'),
            # blank text: no category; an interval without @value: no date
            entry(
                "Z", "<encounter><text> </text><effectiveTime><low value='2021'/></effectiveTime></encounter>"
            ),
        ),
    )
    responses = [
        {"resourceType": "QuestionnaireResponse", "id": f"00000000-0000-4000-8000-00000000001{i}"}
        for i in (1, 2)
    ]
    condition = map_condition(context(document), SUBJECT, ENCOUNTER, responses)
    assert without_ids(condition) == {
        "resourceType": "Condition",
        "clinicalStatus": "active",
        "verificationStatus": "unknown",
        "category": [{"text": "Visit  one"}],  # all-text: a space before each part
        "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes"}]},
        "subject": ref(SUBJECT),
        "context": ref(ENCOUNTER),
        "assertedDate": "2020-01-01",
        "language": "fr",
        "evidence": [{"detail": [ref(r)]} for r in responses],
    }


def test_condition_without_discriminator_or_encounters():
    condition = map_condition(context(cda(section(section(title="x")))), None, ENCOUNTER, [])
    assert without_ids(condition) == {
        "resourceType": "Condition",
        "clinicalStatus": "active",
        "verificationStatus": "unknown",
        "context": ref(ENCOUNTER),
    }


# -- Composition (3.15, 6.9) ---------------------------------------------------------------------------------


def test_composition_sections():
    document = cda(
        section(
            section(
                section(title="Deeper", text="<content>deeper</content>"),
                title="Child <b>bold</b>",
                text="<content>child</content>",
            ),
            section(text="untitled but with text"),
            section(title="", text=""),  # nothing left: omitted
            title="Top title",
            text="top <br/> text",
        )
        + section(section(section(text="only a grandchild has text")))  # the child's own text only
        + section()  # empty top-level section: omitted
        + '<component><npfitlc:contentId root="x" extension="y"/></component>'  # no section at all
    )
    plans = [{"resourceType": "CarePlan", "id": f"00000000-0000-4000-8000-00000000002{i}"} for i in (1, 2)]
    responses = [{"resourceType": "QuestionnaireResponse", "id": "00000000-0000-4000-8000-000000000031"}]
    author = {"resourceType": "Practitioner", "id": "00000000-0000-4000-8000-000000000041"}
    composition = map_composition(context(document), SUBJECT, ENCOUNTER, [author], plans, REFERRAL, responses)

    def div(markup: str) -> dict[str, str]:
        return {"status": "generated", "div": f"{XHTML_DIV}{markup}</div>"}

    assert composition["section"] == [
        {
            "title": "Top title",
            "text": div("top &lt;br/&gt; text"),
            "section": [
                {
                    "title": "Child  bold",  # all-text of the title: a space before each part
                    "text": div("&lt;content&gt;child&lt;/content&gt;"),
                    "section": [{"title": "Deeper", "text": div("&lt;content&gt;deeper&lt;/content&gt;")}],
                },
                {"text": div("untitled but with text")},
            ],
        },
        {"section": [{"section": [{"text": div("only a grandchild has text")}]}]},
        {"title": "CarePlan", "entry": [ref(plans[0])]},
        {"title": "CarePlan", "entry": [ref(plans[1])]},
        {"title": "ReferralRequest", "entry": [ref(REFERRAL)]},
        {"title": "QuestionnaireResponse", "entry": [ref(responses[0])]},
    ]
    assert without_ids({k: v for k, v in composition.items() if k != "section"}) == {
        "resourceType": "Composition",
        "identifier": {"use": "usual", "value": "SET-1"},
        "status": "final",
        "type": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "371531000",
                    "display": "Report of clinical encounter (record artifact)",
                }
            ]
        },
        "subject": ref(SUBJECT),
        "encounter": ref(ENCOUNTER),
        "date": "2021-04-06T11:00:00+00:00",
        "author": [ref(author)],
        "title": "111 Report",
    }


@pytest.mark.parametrize(("code", "emitted"), [("V", "V"), ("N", "N"), ("R", "R"), ("X", None), ("v", None)])
def test_composition_confidentiality(code, emitted):
    document = cda(header=f'<confidentialityCode code="{code}" codeSystem="2.16.840.1.113883.1.11.16926"/>')
    composition = map_composition(context(document), SUBJECT, ENCOUNTER, [], [], REFERRAL, [])
    assert composition.get("confidentiality") == emitted


def test_composition_relates_to_the_parent_document():
    header = (
        '<relatedDocument typeCode="RPLC"><parentDocument><id root="PARENT-1"/><id root="PARENT-2"/>'
        "</parentDocument></relatedDocument>"
    )
    composition = map_composition(context(cda(header=header)), SUBJECT, ENCOUNTER, [], [], REFERRAL, [])
    assert composition["relatesTo"] == [
        {"code": "replaces", "targetIdentifier": {"use": "usual", "value": "PARENT-1"}}
    ]


# -- Appointment (3.17, 6.1) ---------------------------------------------------------------------------------

APPOINTMENT_ENTRY = entry(
    "COCD_TP146093GB01#AppointmentReference",
    '<encounter classCode="ENC" moodCode="APT">'
    '<code code="01" displayName="Patient convenience appointment"/><effectiveTime value="201706011400+00"/>'
    '<participant typeCode="LOC"><participantRole><addr use="WP"><city>Leeds</city></addr>'
    "<playingEntity><name>Clinic A</name><desc>Room 1</desc></playingEntity></participantRole></participant>"
    '<participant typeCode="LOC"><participantRole><playingEntity><name nullFlavor="UNK"/></playingEntity>'
    "</participantRole></participant></encounter>",
)
APPOINTMENT_SECTION = section(
    title="Appointment Reference", text="<content>Date/Time: 1 June</content>", code="749001000000101"
)


def test_appointment_with_locations_in_participant_order():
    document = cda(section(APPOINTMENT_ENTRY, APPOINTMENT_SECTION))
    found = map_appointment(context(document), SUBJECT)
    assert found is not None
    appointment, locations = found
    assert [without_ids(location) for location in locations] == [
        {
            "resourceType": "Location",
            "name": "Clinic A",
            "description": "Room 1",
            "address": {"use": "work", "city": "Leeds"},
        },
        {"resourceType": "Location"},
    ]
    assert without_ids(appointment) == {
        "resourceType": "Appointment",
        "status": "booked",
        "reason": [{"text": "Patient convenience appointment"}],
        "description": "Appointment Reference",
        "comment": "Date/Time: 1 June",
        "participant": [
            {"actor": ref(actor), "required": "required", "status": "accepted"}
            for actor in (SUBJECT, *locations)
        ],
    }


@pytest.mark.parametrize(
    "body",
    [
        section(APPOINTMENT_ENTRY),  # entry without the Appointment section
        section(APPOINTMENT_SECTION),  # section without the entry
        section(APPOINTMENT_ENTRY) + section(section(APPOINTMENT_SECTION)),  # the section deeper than NESTED
    ],
)
def test_no_appointment_without_both_entry_and_section(body):
    assert map_appointment(context(cda(body)), SUBJECT) is None


def test_appointment_without_patient():
    found = map_appointment(context(cda(section(APPOINTMENT_ENTRY, APPOINTMENT_SECTION))), None)
    assert found is not None
    appointment, locations = found
    assert [p["actor"] for p in appointment["participant"]] == [ref(location) for location in locations]


# -- documents without section content -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        cda('<nonXMLBody><text mediaType="text/plain">report</text></nonXMLBody>', structured=False),
        cda(""),  # an empty structuredBody
        cda(section()),  # one empty section
    ],
    ids=["nonXMLBody", "empty structuredBody", "empty section"],
)
def test_no_section_derived_content(document):
    ctx = context(document)
    assert map_triage(ctx, SUBJECT, ENCOUNTER) == []
    assert map_observations(ctx, SUBJECT, ENCOUNTER) == []
    assert map_care_plans(ctx, SUBJECT, ENCOUNTER, CONDITION, [PROVIDER]) == []
    assert map_appointment(ctx, SUBJECT) is None
    condition = map_condition(ctx, SUBJECT, ENCOUNTER, [])
    assert not {"code", "category", "assertedDate", "language", "evidence"} & condition.keys()
    consent = map_consent(ctx, SUBJECT, ENCOUNTER, PROVIDER)
    assert not {"text", "sourceIdentifier", "dataPeriod"} & consent.keys()
    composition = map_composition(ctx, SUBJECT, ENCOUNTER, [], [], REFERRAL, [])
    assert composition["section"] == [{"title": "ReferralRequest", "entry": [ref(REFERRAL)]}]


def test_document_without_any_body():
    document = etree.fromstring('<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    ctx = context(document)
    composition = map_composition(ctx, None, ENCOUNTER, [], [], REFERRAL, [])
    absent = {"identifier", "date", "subject", "author", "confidentiality", "relatesTo"}
    assert not absent & composition.keys()
    consent = map_consent(ctx, None, ENCOUNTER, None)
    assert not {"identifier", "patient", "consentingParty", "organization"} & consent.keys()
