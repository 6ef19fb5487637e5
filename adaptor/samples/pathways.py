"""The Pathways case record (``pathwaysCase_v2.4.xsd``) that a 111 report carries as a base64 attachment.

:func:`pathways_case` writes the case of one call: destination service, case details, patient, and one
``pathwayTriage`` per :class:`~.model.Triage` with its triage lines (questions with every answer offered and the
one chosen, the disposition reached, care advice given), in the schema's element order. The mapping turns every
triage line into a QuestionnaireResponse/Questionnaire pair (mapping.md §3.18).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from lxml import etree

from adaptor.samples.model import Address, Organisation, ProfessionalInformant, Report, Triage, TriageLine
from adaptor.samples.timing import Call, birth_date

PATHWAYS = "http://nhspathways.org/webservices/pathways/pathwaysCase"
#: Pathways clinical content release the synthetic triages claim to come from.
CONTENT_VERSION = "33.2.0"
PATHWAY_VERSION = ("33", "2", "0")
#: Seconds each triage line takes: enough to make the times plausible, short enough to fit any call.
LINE_SECONDS = 25


def _el(parent: etree._Element, name: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{PATHWAYS}}}{name}", attrib)
    element.text = text
    return element


def _address(parent: etree._Element, address: Address | None, *, country: bool) -> None:
    """A Pathways address: building, street, locality, town, county, postcode are all required (may be empty)."""
    lines = address.lines if address is not None else ()
    element = _el(parent, "address")
    _el(element, "building", lines[0] if lines else "")
    _el(element, "street", lines[1] if len(lines) > 1 else "")
    _el(element, "locality", ", ".join(lines[2:]))
    _el(element, "town", address.city if address is not None else "")
    _el(element, "county", address.county if address is not None else "")
    _el(element, "postcode", address.postcode if address is not None else "")
    if country:
        country_element = _el(element, "country")
        _el(country_element, "name", "England")
        _el(country_element, "isoAlpha2", "GB")
    if address is not None and address.directions:
        _el(element, "directions", address.directions)


def _phone(parent: etree._Element, name: str, number: str) -> None:
    _el(_el(parent, name), "number", number)


def _number(value: str) -> str:
    """``tel:01632960123`` → ``01632960123``."""
    return value.split(":", 1)[-1]


def _age_group(years: int, days: int) -> str:
    if years >= 16:
        return "Adult"
    if years >= 5:
        return "Child"
    if years >= 1:
        return "Toddler"
    return "Infant" if days >= 28 else "Neonate"


def _line(parent: etree._Element, line: TriageLine, pathway_id: str, order: int, start: datetime, call: Call) -> None:
    element = _el(parent, "triageLine")
    _el(element, "start", call.xs(start))
    _el(element, "finish", call.xs(start + timedelta(seconds=LINE_SECONDS - 5)))
    _el(element, "questionType", line.kind)
    if line.question is not None:
        question = _el(element, "question")
        logic = _el(question, "triageLogicId")
        version = _el(logic, "pathwayVersion")
        for part, value in zip(("major", "minor", "subRevision"), PATHWAY_VERSION, strict=True):
            _el(version, part, value)
        _el(logic, "pathwayId", pathway_id)
        _el(logic, "pathwayOrderNo", str(order))
        _el(question, "questionId", line.question.id)
        _el(question, "questionText", line.question.text)
        _el(question, "questionRationale", line.question.rationale)
        answers = _el(question, "answers")
        for index, text in enumerate(line.question.answers):
            answer = _el(answers, "answer", selected="true" if index == line.question.chosen else "false")
            _el(answer, "text", text)
            _el(answer, "rationale", "")
    if line.care_advice:
        details = _el(element, "careAdviceDetails")
        for advice in line.care_advice:
            care_advice = _el(details, "careAdvice")
            _el(care_advice, "id", advice.id)
            _el(care_advice, "topic", advice.topic)
            items = _el(care_advice, "itemDetails")
            for number, text in enumerate(advice.items, start=1):
                item = _el(items, "item")
                _el(item, "id", f"{advice.id}-{number}")
                _el(item, "text", text)
    report = _el(element, "reportText")
    _el(report, "text", line.report)
    _el(report, "positive", "true" if line.positive else "false")
    if line.comment:
        _el(element, "userComment", line.comment)
    _el(element, "action", "End" if line.kind == "Disposition" else "Next")
    _el(element, "includeInReport", "true" if line.report else "false")


def _triage(
    parent: etree._Element, triage: Triage, start: datetime, site: Organisation, call: Call, caller_is_patient: bool
) -> datetime:
    """One pathwayTriage starting at ``start``; returns when it finished."""
    finish = start + timedelta(seconds=LINE_SECONDS * len(triage.lines))
    element = _el(parent, "pathwayTriage")
    _el(element, "start", call.xs(start))
    _el(element, "finish", call.xs(finish))
    initial = _el(element, "triageDisposition")
    _el(initial, "initialDispCode", triage.initial.code)
    _el(initial, "initialDispText", triage.initial.text)
    _el(initial, "timeReached", call.xs(finish - timedelta(seconds=LINE_SECONDS)))
    final = _el(element, "finalDisposition")
    _el(final, "finalDispCode", triage.final.code)
    _el(final, "finalDisptext", triage.final.text)
    user = _el(element, "user")
    _el(user, "id", triage.user.id)
    _el(user, "name", triage.user.name)
    _el(user, "skillSet", triage.user.skill_set)
    lines = _el(element, "triageLineDetails")
    for index, line in enumerate(triage.lines):
        _line(lines, line, triage.pathway_id, 5 + 10 * index, start + timedelta(seconds=LINE_SECONDS * index), call)
    origin = _el(element, "origSite")
    _el(origin, "siteId", site.ods)
    _el(origin, "siteName", site.name)
    _el(origin, "caseId", call.case_reference)
    _el(origin, "pathwaysContentVersion", CONTENT_VERSION)
    software = _el(origin, "software")
    _el(software, "productName", "Synthetic 111 Triage")
    _el(software, "version", "1.0")
    _el(element, "callerIsPatient", "true" if caller_is_patient else "false")
    return finish


def pathways_case(report: Report, call: Call, today: date) -> bytes:
    """The Pathways case XML (UTF-8 bytes) for ``report``, valid against ``pathwaysCase_v2.4.xsd``."""
    record = report.pathways
    assert record is not None, "a report without a Pathways record has no case"
    patient = report.patient
    primary = next((r.organisation for r in report.recipients if r.type_code == "PRCP"), None)
    phones = [_number(t.value) for t in patient.telecoms if t.value.startswith("tel:") and "EC" not in t.use.split()]
    caller_phones = [
        _number(t.value)
        for informant in report.informants
        for t in (informant.clinician.telecoms if isinstance(informant, ProfessionalInformant) else informant.telecoms)
        if t.value.startswith("tel:")
    ]
    return_phone = (phones or caller_phones or ["01632960000"])[0]

    nsmap = {None: PATHWAYS}  # the default namespace, as Pathways writes it
    case = etree.Element(f"{{{PATHWAYS}}}PathwaysCase", nsmap=nsmap)  # type: ignore[arg-type]
    destination = _el(case, "serviceDestination")
    if primary is not None:
        _el(destination, "name", primary.name)
    _el(destination, "code", (primary.dos_id or primary.ods) if primary is not None else "UNKNOWN")
    _el(case, "messageStatus", "Complete")
    _el(case, "caseReceiveStart", call.xs(call.start))
    _el(case, "caseReceiveEnd", call.xs(call.end - timedelta(seconds=30)))
    outcome = _el(case, "outcome")
    _el(outcome, "title", report.disposition.text)
    _el(outcome, "code", report.disposition.code)

    details = _el(case, "caseDetails")
    _el(details, "caseRef", call.case_reference)
    _el(details, "caseId", call.case_reference)
    where = report.incident_location.address if report.incident_location is not None else patient.address
    _address(details, where, country=True)
    _el(details, "condition", record.condition)
    contact = _el(details, "contactDetails")
    caller = _el(contact, "caller")
    if record.caller_is_patient or not report.informants:
        caller_name = " ".join((*patient.name.given, patient.name.family)).strip()
        caller_phone = return_phone
    else:
        informant = report.informants[0]
        name = informant.clinician.name if isinstance(informant, ProfessionalInformant) else informant.name
        caller_name = " ".join((*name.given, name.family)).strip() or name.text
        caller_phone = (caller_phones or [return_phone])[0]
    _el(caller, "name", caller_name[:45])
    _phone(caller, "phone", caller_phone)

    person = _el(case, "patient")
    _el(person, "forename", " ".join(patient.name.given))
    _el(person, "surname", patient.name.family)
    if patient.address is not None:
        _address(person, patient.address, country=False)
    if phones:
        _phone(person, "phone", phones[0])
    _el(person, "gender", {"1": "Male", "2": "Female"}.get(patient.gender, "Not Specified"))
    if patient.nhs_number is not None:
        _el(person, "nationalNumber", patient.nhs_number)
    if patient.gp is not None:
        provider = _el(person, "providerDetails", type="DOCTOR")
        group = _el(provider, "providerGroup")
        _el(group, "name", patient.gp.name)
        _el(group, "id", patient.gp.ods)
    _el(_el(person, "dateOfBirth"), "dob", birth_date(patient.age, today).isoformat())
    _phone(case, "returnPhone", return_phone)

    pathway_details = _el(case, "pathwayDetails")
    triage_details = _el(pathway_details, "pathwayTriageDetails")
    start = call.start + timedelta(minutes=2)
    for triage in record.triages:
        start = _triage(triage_details, triage, start, report.custodian, call, record.caller_is_patient)
        start += timedelta(minutes=3)  # the hand-over to the next clinician
    demographics = _el(pathway_details, "demographics")
    _el(demographics, "gender", "Female" if patient.gender == "2" else "Male")
    _el(demographics, "ageGroup", _age_group(*patient.age))
    _el(pathway_details, "sharedCaseId", call.case_guid)
    site = _el(case, "site")
    _el(site, "id", report.custodian.ods[:10])
    _el(site, "name", report.custodian.name[:50])
    return etree.tostring(case, xml_declaration=True, encoding="UTF-8")
