"""Synthetic NHS 111 ClinicalDocuments in the on-the-wire CDA format (``POCD_MT000002UK01``).

:func:`report_document` writes a :class:`~.model.Report` as a full NHS 111 report, in the element order of the
schema and with the templates and content ids live senders use: patient with GP practice, authors, informants,
custodian, recipients, participants, consent, the encompassing encounter with its Pathways disposition, and a
structured body whose top-level section carries the coded entries (Pathways case, Permission to View, clinical
discriminator, appointment) and the narrative sections the mapping reads (mapping.md §3).

:func:`minimal_document` writes the smallest valid report, for tests that change one element at a time.

Times are written as HL7 TS. A report's times all derive from one instant (the document time) so that a message
generated later has later times but the same shape.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta

from lxml import etree

from adaptor.itk.xmlsafe import HL7, NPFITLC
from adaptor.samples import pathways
from adaptor.samples.envelope import new_id
from adaptor.samples.model import (
    SNOMED,
    Address,
    Clinician,
    Guardian,
    IncidentLocation,
    Informant,
    Name,
    Organisation,
    Participant,
    Patient,
    ProfessionalInformant,
    Recipient,
    Report,
    Section,
    Telecom,
)
from adaptor.samples.timing import LONDON, Call, birth_date, call_for, human

XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: OIDs used by the templates (NHS CDA "on the wire" conventions).
CONTENT_ID_ROOT = "2.16.840.1.113883.2.1.3.2.4.18.16"
TEMPLATE_ROOT = "2.16.840.1.113883.2.1.3.2.4.18.2"
NHS_NUMBER_VERIFIED = "2.16.840.1.113883.2.1.4.1"
NHS_NUMBER_UNVERIFIED = "2.16.840.1.113883.2.1.3.2.4.18.23"
LOCAL_ID = "2.16.840.1.113883.2.1.3.2.4.18.24"
ODS_CODE = "2.16.840.1.113883.2.1.3.2.4.19.1"
CASE_GUID = "2.16.840.1.113883.2.1.3.2.4.18.34"
CASE_REFERENCE = "2.16.840.1.113883.2.1.3.2.4.18.35"
DISPOSITION_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.17.325"
JOB_ROLE_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.17.196"
RELATIONSHIP_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.16.45"

REPORT_CODE = ("819551000000100", "NHS 111 Report")
IUC_REPORT_CODE = ("1066271000000101", "Integrated Urgent Care Report")
ADVICE_SECTION = ("1052951000000105", "Information and advice given")
CONSENT_SECTION = ("887031000000108", "Consent for information sharing")
APPOINTMENT_SECTION = ("749001000000101", "Appointment")
COMPLAINT_SECTION = ("886891000000102", "Presenting complaints or issues")
DISPOSITION_SECTION = ("913341000000104", "Disposition details")
CONSENT_CODE = ("425691002", "Consent given for electronic record sharing")

# -- HL7 data types ------------------------------------------------------------------------------------------


def _el(parent: etree._Element, name: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{HL7}}}{name}", attrib)
    element.text = text
    return element


def _content_id(parent: etree._Element, extension: str) -> None:
    etree.SubElement(parent, f"{{{NPFITLC}}}contentId", root=CONTENT_ID_ROOT, extension=extension)


def _template(parent: etree._Element, extension: str) -> None:
    _el(parent, "templateId", root=TEMPLATE_ROOT, extension=extension)


def _typed(element: etree._Element, xsi_type: str) -> etree._Element:
    element.set(f"{{{XSI}}}type", xsi_type)
    return element


def _address(parent: etree._Element, address: Address) -> None:
    addr = _el(parent, "addr", use=address.use)
    for line in address.lines:
        _el(addr, "streetAddressLine", line)
    if address.city:
        _el(addr, "city", address.city)
    if address.county:
        _el(addr, "county", address.county)
    if address.postcode:
        _el(addr, "postalCode", address.postcode)
    if address.directions:
        _el(addr, "desc", address.directions)


def _telecoms(parent: etree._Element, telecoms: tuple[Telecom, ...]) -> None:
    for telecom in telecoms:
        element = _el(parent, "telecom", value=telecom.value)
        if telecom.use:
            element.set("use", telecom.use)


def _name(parent: etree._Element, name: Name) -> None:
    element = _el(parent, "name")
    if name.text:
        element.text = name.text
        return
    if name.prefix:
        _el(element, "prefix", name.prefix)
    for given in name.given:
        _el(element, "given", given)
    if name.family:
        _el(element, "family", name.family)


def _person(parent: etree._Element, tag: str, template: str, name: Name) -> None:
    person = _el(parent, tag, classCode="PSN", determinerCode="INSTANCE")
    _template(person, template)
    _name(person, name)


def _organisation(parent: etree._Element, tag: str, template: str, organisation: Organisation) -> None:
    """An Organization-typed element: id (ODS), name, telecom, addr, kind, and the organisation it belongs to."""
    element = _el(parent, tag, classCode="ORG", determinerCode="INSTANCE")
    _template(element, template)
    _el(element, "id", root=ODS_CODE, extension=organisation.ods)
    _el(element, "name", organisation.name)
    _telecoms(element, organisation.telecoms)
    if organisation.address is not None:
        _address(element, organisation.address)
    if organisation.kind is not None:
        code, display = organisation.kind
        _el(
            element,
            "standardIndustryClassCode",
            code=code,
            codeSystem="2.16.840.1.113883.2.1.3.2.4.17.289",
            displayName=display,
        )
    if organisation.part_of is not None:
        part_of = _el(element, "asOrganizationPartOf", classCode="PART")
        _template(part_of, template.split("#")[0] + "#asOrganizationPartOf")
        _organisation(part_of, "wholeOrganization", template.split("#")[0] + "#wholeOrganization", organisation.part_of)


def _code(parent: etree._Element, name: str, coded: tuple[str, str], system: str) -> etree._Element:
    code, display = coded
    return _el(parent, name, code=code, codeSystem=system, displayName=display)


def _interval(parent: etree._Element, name: str, low: str | None, high: str | None) -> etree._Element:
    interval = _el(parent, name)
    if low is not None:
        _el(interval, "low", value=low)
    if high is not None:
        _el(interval, "high", value=high)
    return interval


# -- participations ------------------------------------------------------------------------------------------


def _record_target(cd: etree._Element, patient: Patient, today: date) -> None:
    record_target = _el(cd, "recordTarget", typeCode="RCT", contextControlCode="OP")
    _content_id(record_target, "COCD_TP145201GB01#PatientRole")
    role = _el(record_target, "patientRole", classCode="PAT")
    _template(role, "COCD_TP145201GB01#PatientRole")
    if patient.nhs_number is not None:
        root = NHS_NUMBER_VERIFIED if patient.nhs_number_verified else NHS_NUMBER_UNVERIFIED
        _el(role, "id", root=root, extension=patient.nhs_number)
    _el(role, "id", root=LOCAL_ID, extension=patient.local_id, assigningAuthorityName="Synthetic 111 Record")
    if patient.address is not None:
        _address(role, patient.address)
    _telecoms(role, patient.telecoms)

    person = _el(role, "patient", classCode="PSN", determinerCode="INSTANCE")
    _template(person, "COCD_TP145201GB01#patientPatient")
    _name(person, patient.name)
    genders = {"1": "Male", "2": "Female", "9": "Not Specified"}
    _el(
        person,
        "administrativeGenderCode",
        code=patient.gender,
        codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25",
        displayName=genders.get(patient.gender, "Not Known"),
    )
    _el(person, "birthTime", value=birth_date(patient.age, today).strftime("%Y%m%d"))
    if patient.marital_status is not None:
        _el(person, "maritalStatusCode", code=patient.marital_status, codeSystem="2.16.840.1.113883.5.2")
    if patient.ethnic_group is not None:
        _code(person, "ethnicGroupCode", patient.ethnic_group, "2.16.840.1.113883.2.1.3.2.4.16.6")
    if patient.guardian is not None:
        _guardian(person, patient.guardian)
    language = _el(person, "languageCommunication")
    _template(language, "COCD_TP145201GB01#languageCommunication")
    _el(language, "languageCode", code=patient.language)
    _el(language, "preferenceInd", value="true")
    if patient.gp is not None:
        _organisation(role, "providerOrganization", "COCD_TP145201GB01#providerOrganization", patient.gp)


def _guardian(person: etree._Element, guardian: Guardian) -> None:
    element = _el(person, "guardian", classCode="GUARD")
    _template(element, "COCD_TP145201GB01#guardian")
    if guardian.address is not None:
        _address(element, guardian.address)
    _telecoms(element, guardian.telecoms)
    if guardian.organisation is not None:
        _organisation(element, "guardianOrganization", "COCD_TP145201GB01#guardianOrganization", guardian.organisation)
    elif guardian.name is not None:
        _person(element, "guardianPerson", "COCD_TP145201GB01#guardianPerson", guardian.name)


def _clinician(parent: etree._Element, tag: str, template: str, clinician: Clinician) -> None:
    """assignedAuthor / assignedEntity: id, job role, telecom, the person and their organisation."""
    entity = _el(parent, tag, classCode="ASSIGNED")
    _template(entity, f"{template}#{tag[0].upper()}{tag[1:]}")
    _el(entity, "id", root=LOCAL_ID, extension=clinician.user_id)
    if clinician.role is not None:
        _code(entity, "code", clinician.role, JOB_ROLE_SYSTEM)
    _telecoms(entity, clinician.telecoms)
    _person(entity, "assignedPerson", f"{template}#assignedPerson", clinician.name)
    if clinician.organisation is not None:
        _organisation(entity, "representedOrganization", f"{template}#representedOrganization", clinician.organisation)


def _author(cd: etree._Element, clinician: Clinician, time: str) -> None:
    author = _el(cd, "author", typeCode="AUT", contextControlCode="OP")
    _content_id(author, "COCD_TP145200GB01#AssignedAuthor")
    _el(
        author,
        "functionCode",
        code="OA",
        codeSystem="2.16.840.1.113883.2.1.3.2.4.17.178",
        displayName="Originating Author",
    )
    _el(author, "time", value=time)
    _clinician(author, "assignedAuthor", "COCD_TP145200GB01", clinician)


def _data_enterer(cd: etree._Element, clinician: Clinician, time: str) -> None:
    enterer = _el(cd, "dataEnterer", typeCode="ENT", contextControlCode="OP")
    _content_id(enterer, "COCD_TP145210GB01#AssignedEntity")
    _el(enterer, "time", value=time)
    _clinician(enterer, "assignedEntity", "COCD_TP145210GB01", clinician)


def _informant(cd: etree._Element, informant: Informant, call: Call) -> None:
    element = _el(cd, "informant", typeCode="INF", contextControlCode="OP")
    if isinstance(informant, ProfessionalInformant):
        _content_id(element, "COCD_TP145210GB01#AssignedEntity")
        _clinician(element, "assignedEntity", "COCD_TP145210GB01", informant.clinician)
        return
    _content_id(element, "COCD_TP145007UK05#RelatedEntity")
    related = _el(element, "relatedEntity", classCode="PRS")
    _template(related, "COCD_TP145007UK05#RelatedEntity")
    _code(related, "code", informant.relationship, RELATIONSHIP_SYSTEM)
    if informant.address is not None:
        _address(related, informant.address)
    _telecoms(related, informant.telecoms)
    # The relationship as it stood during the call: RelatedPerson.period.
    _interval(related, "effectiveTime", call.ts(call.start), call.ts(call.end))
    _person(related, "relatedPerson", "COCD_TP145007UK05#relationshipHolder", informant.name)


def _custodian(cd: etree._Element, organisation: Organisation) -> None:
    custodian = _el(cd, "custodian", typeCode="CST")
    _content_id(custodian, "COCD_TP145018UK03#AssignedCustodian")
    assigned = _el(custodian, "assignedCustodian", classCode="ASSIGNED")
    _template(assigned, "COCD_TP145018UK03#AssignedCustodian")
    represented = _el(assigned, "representedCustodianOrganization", classCode="ORG", determinerCode="INSTANCE")
    _template(represented, "COCD_TP145018UK03#representedCustodianOrganization")
    _el(represented, "id", root=ODS_CODE, extension=organisation.ods)
    _el(represented, "name", organisation.name)
    if organisation.telecoms:
        _telecoms(represented, organisation.telecoms[:1])
    if organisation.address is not None:
        _address(represented, organisation.address)


def _recipient(cd: etree._Element, recipient: Recipient) -> None:
    element = _el(cd, "informationRecipient", typeCode=recipient.type_code)
    _content_id(element, "COCD_TP145203GB03#IntendedRecipient")
    intended = _el(element, "intendedRecipient", classCode="ASSIGNED")
    _template(intended, "COCD_TP145203GB03#IntendedRecipient")
    organisation = recipient.organisation
    if organisation.address is not None:
        _address(intended, organisation.address)
    _telecoms(intended, organisation.telecoms)
    _organisation(intended, "receivedOrganization", "COCD_TP145203GB03#representedOrganization", organisation)


def _participant(cd: etree._Element, participant: Participant, call: Call) -> None:
    if participant.type_code == "REFT":
        template = "COCD_TP145214GB01#AssociatedEntity"
    else:
        template = "COCD_TP145212GB02#Workgroup"
    element = _el(cd, "participant", typeCode=participant.type_code, contextControlCode="OP")
    _content_id(element, template)
    if participant.window is not None:
        low, high = (call.document_time + timedelta(minutes=m) for m in participant.window)
        _interval(element, "time", call.ts(low), call.ts(high))
    entity = _el(element, "associatedEntity", classCode="ASSIGNED")
    _template(entity, template)
    if participant.organisation is not None:
        _el(entity, "id", root=ODS_CODE, extension=participant.organisation.ods)
    if participant.role is not None:
        _code(entity, "code", participant.role, "2.16.840.1.113883.2.1.3.2.4.17.266")
    if participant.address is not None:
        _address(entity, participant.address)
    _telecoms(entity, participant.telecoms)
    if participant.name is not None:
        _person(entity, "associatedPerson", template.split("#")[0] + "#assignedPerson", participant.name)
    if participant.organisation is not None:
        _organisation(
            entity, "scopingOrganization", template.split("#")[0] + "#scopingOrganization", participant.organisation
        )


def _related_document(cd: etree._Element) -> None:
    related = _el(cd, "relatedDocument", typeCode="RPLC")
    parent = _el(related, "parentDocument", classCode="DOCCLIN", moodCode="EVN")
    _el(parent, "id", root=new_id())


def _authorization(cd: etree._Element) -> None:
    authorization = _el(cd, "authorization", typeCode="AUTH")
    _content_id(authorization, "COCD_TP146226GB02#Consent")
    consent = _el(authorization, "consent", classCode="CONS", moodCode="EVN")
    _template(consent, "COCD_TP146226GB02#Consent")
    _el(consent, "id", root=new_id())
    _code(consent, "code", CONSENT_CODE, SNOMED)
    _el(consent, "statusCode", code="completed")


def _encompassing_encounter(cd: etree._Element, report: Report, call: Call) -> None:
    component_of = _el(cd, "componentOf", typeCode="COMP")
    _content_id(component_of, "COCD_TP146232GB01#EncompassingEncounter")
    encounter = _el(component_of, "encompassingEncounter", classCode="ENC", moodCode="EVN")
    _template(encounter, "COCD_TP146232GB01#EncompassingEncounter")
    _el(encounter, "id", root=CASE_GUID, extension=call.case_guid)
    _el(encounter, "id", root=CASE_REFERENCE, extension=call.case_reference)
    _el(
        encounter,
        "code",
        code="NHS111Encounter",
        codeSystem="2.16.840.1.113883.2.1.3.2.4.17.326",
        displayName="NHS111 Encounter",
    )
    _interval(encounter, "effectiveTime", call.ts(call.start), call.ts(call.end))
    _code(encounter, "dischargeDispositionCode", (report.disposition.code, report.disposition.text), DISPOSITION_SYSTEM)
    if report.responsible_party is not None:
        responsible = _el(encounter, "responsibleParty", typeCode="RESP")
        _template(responsible, "COCD_TP146232GB01#responsibleParty")
        _content_id(responsible, "COCD_TP145210GB01#AssignedEntity")
        _clinician(responsible, "assignedEntity", "COCD_TP145210GB01", report.responsible_party)
    if report.incident_location is not None:
        _incident_location(encounter, report.incident_location)


def _incident_location(encounter: etree._Element, incident: IncidentLocation) -> None:
    location = _el(encounter, "location", typeCode="LOC")
    _template(location, "COCD_TP146232GB01#location")
    _content_id(location, "COCD_TP145222GB02#HealthCareFacility")
    facility = _el(location, "healthCareFacility", classCode="ISDLOC")
    _template(facility, "COCD_TP145222GB02#HealthCareFacility")
    _el(facility, "id", nullFlavor="NA")
    place = _el(facility, "location", classCode="PLC", determinerCode="INSTANCE")
    _template(place, "COCD_TP145222GB02#location")
    _el(place, "name", incident.name)
    _address(place, incident.address)


# -- the structured body -------------------------------------------------------------------------------------


def _entry(section: etree._Element, content_id: str) -> etree._Element:
    entry = _el(section, "entry", typeCode="COMP", contextConductionInd="true")
    _content_id(entry, content_id)
    return entry


def _pathways_entry(section: etree._Element, encoded: str) -> None:
    entry = _entry(section, "COCD_TP146002GB01#ObservationMedia")
    media = _el(entry, "observationMedia", classCode="OBS", moodCode="EVN")
    _template(media, "COCD_TP146002GB01#ObservationMedia")
    _el(media, "id", root=new_id())
    _typed(_el(media, "value", encoded, representation="B64", mediaType="text/xml"), "ED")
    device = _el(media, "participant", typeCode="DEV", contextControlCode="OP")
    _template(device, "COCD_TP146002GB01#participant")
    _content_id(device, "COCD_TP145000GB01#ParticipantRole")
    role = _el(device, "participantRole", classCode="ROL")
    _template(role, "COCD_TP145000GB01#ParticipantRole")
    _el(role, "code", code="TS", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.418")
    playing = _el(role, "playingDevice", classCode="DEV", determinerCode="INSTANCE")
    _template(playing, "COCD_TP145000GB01#playingDevice")
    _el(playing, "manufacturerModelName", displayName="Pathways")
    _el(playing, "softwareName", displayName=pathways.CONTENT_VERSION)


def _permission_to_view(section: etree._Element, call: Call, days: int) -> None:
    entry = _entry(section, "COCD_TP146050GB01#PermissionToView")
    observation = _el(entry, "observation", classCode="OBS", moodCode="EVN")
    _template(observation, "COCD_TP146050GB01#PermissionToView")
    _el(observation, "code", code="PTV", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.220")
    _interval(observation, "effectiveTime", call.ts(call.end), call.ts(call.end + timedelta(days=days)))
    _typed(_el(observation, "value", code="01", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.524"), "CV")


def _discriminator(section: etree._Element, coded: tuple[str, str], system: str) -> None:
    entry = _entry(section, "COCD_TP146092GB01#ClinicalDiscriminator")
    observation = _el(entry, "observation", classCode="OBS", moodCode="EVN")
    _template(observation, "COCD_TP146092GB01#ClinicalDiscriminator")
    _el(observation, "code", code="CD", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.540")
    _typed(_code(observation, "value", coded, system), "CV")


def _appointment_entry(section: etree._Element, report: Report, call: Call) -> None:
    appointment = report.appointment
    assert appointment is not None
    entry = _entry(section, "COCD_TP146093GB01#AppointmentReference")
    encounter = _el(entry, "encounter", classCode="ENC", moodCode="APT")
    _template(encounter, "COCD_TP146093GB01#AppointmentReference")
    _el(encounter, "id", root="2.16.840.1.113883.2.1.3.2.4.17.541", extension=new_id().lower())
    _code(encounter, "code", appointment.reason, "2.16.840.1.113883.2.1.3.2.4.17.542")
    _el(encounter, "effectiveTime", value=call.ts(call.document_time + timedelta(minutes=appointment.in_minutes)))
    participant = _el(encounter, "participant", typeCode="LOC", contextControlCode="OP")
    _template(participant, "COCD_TP146093GB01#location")
    role = _el(participant, "participantRole", classCode="ASSIGNED")
    _template(role, "COCD_TP146093GB01#assignedEntity")
    _el(role, "id", root=ODS_CODE, extension=appointment.place.ods)
    if appointment.place.address is not None:
        _address(role, appointment.place.address)
    entity = _el(role, "playingEntity", classCode="ORG", determinerCode="INSTANCE")
    _template(entity, "COCD_TP146093GB01#assignedOrganization")
    _el(entity, "name", appointment.place.name)
    _el(entity, "desc", appointment.description)


def _section_text(section: etree._Element, spec: Section) -> None:
    if not spec.paragraphs and not spec.rows:
        return
    text = _el(section, "text")
    for index, paragraph in enumerate(spec.paragraphs):
        if index:
            _el(text, "br")
        _el(text, "content", paragraph)
    if spec.rows:
        body = _el(_el(text, "table", width="100%"), "tbody")
        for header, value in spec.rows:
            row = _el(body, "tr")
            _el(row, "th", header)
            _el(row, "td", value)


def _section(parent: etree._Element, spec: Section, level: int = 1) -> None:
    component = _el(parent, "component", typeCode="COMP", contextConductionInd="true")
    if level == 1:
        _content_id(component, "COCD_TP146246GB01#Section1")
    else:
        _template(component, f"COCD_TP146246GB01#component{level - 1}")
    section = _el(component, "section", classCode="DOCSECT", moodCode="EVN")
    _template(section, "COCD_TP146246GB01#Section1" if level == 1 else f"COCD_TP146246GB01#section{level}")
    _el(section, "id", root=new_id())
    if spec.code is not None:
        _code(section, "code", spec.code, SNOMED)
    _el(section, "title", spec.title)
    _section_text(section, spec)
    for child in spec.children:
        _section(section, child, level + 1)


def narrative_sections(report: Report, call: Call) -> list[Section]:
    """The narrative sections of a report, in the order live 111 reports have them."""
    sections = [
        Section("Patient's Reported Condition", report.complaint, code=COMPLAINT_SECTION),
        Section(
            "Pathways Disposition",
            (f"{report.disposition.text} ({report.disposition.code})", *_selected_service(report)),
        ),
        Section("Consultation Summary", report.consultation),
    ]
    if report.pathways is not None:
        assessment = tuple(line.report for triage in report.pathways.triages for line in triage.lines if line.report)
        sections.append(Section("Pathways Assessment", assessment))
        for triage in report.pathways.triages:
            advice = tuple(item for line in triage.lines for topic in line.care_advice for item in topic.items)
            if advice:
                title = "Information and advice given"
                if len(report.pathways.triages) > 1:
                    title += f" ({triage.user.name})"
                sections.append(Section(title, advice, code=ADVICE_SECTION))
    sections.extend(report.sections)
    if report.consent is not None:
        sections.append(
            Section(
                "Permission to View",
                code=CONSENT_SECTION,
                rows=(
                    ("Permission to view outcome", "Permission to view obtained"),
                    ("Date obtained", human(call.end)),
                    ("Date expires", human(call.end + timedelta(days=report.consent.days))),
                ),
            )
        )
    if report.appointment is not None:
        when = call.document_time + timedelta(minutes=report.appointment.in_minutes)
        sections.append(
            Section(
                "Appointment Reference",
                (
                    f"Date/Time: {human(when)}",
                    f"Location: {report.appointment.place.name}",
                    report.appointment.description,
                ),
                code=APPOINTMENT_SECTION,
            )
        )
    sections.append(Section("Disposition", (report.disposition.text,), code=DISPOSITION_SECTION))
    return sections


def _selected_service(report: Report) -> tuple[str, ...]:
    primary = [r.organisation.name for r in report.recipients if r.type_code == "PRCP"]
    return (f"Selected service: {primary[0]}",) if primary else ()


def _body(cd: etree._Element, report: Report, call: Call, today: date) -> None:
    component = _el(cd, "component", typeCode="COMP", contextConductionInd="true")
    body = _el(component, "structuredBody", classCode="DOCBODY", moodCode="EVN")
    top = _el(_el(body, "component", typeCode="COMP", contextConductionInd="true"), "section")
    top.set("classCode", "DOCSECT")
    top.set("moodCode", "EVN")
    _el(top, "id", root=new_id())
    if report.pathways is not None:
        case = pathways.pathways_case(report, call, today)
        # Wrapped at 76 characters like live senders' attachments; the receiver ignores the line breaks.
        _pathways_entry(top, base64.encodebytes(case).decode("ascii"))
    if report.consent is not None:
        _permission_to_view(top, call, report.consent.days)
    if report.discriminator is not None:
        _discriminator(top, report.discriminator, SNOMED)
        # Live senders add the disposition as a second discriminator in the Pathways code system; the mapping
        # ignores it (Condition.code takes SNOMED CT only).
        _discriminator(top, (report.disposition.code, report.disposition.text), "2.16.840.1.113883.2.1.3.2.4.24")
    if report.appointment is not None:
        _appointment_entry(top, report, call)
    for spec in narrative_sections(report, call):
        _section(top, spec)


# -- documents -----------------------------------------------------------------------------------------------


def _document_root(
    title: str, code: tuple[str, str], effective_time: str | None, confidentiality: str
) -> etree._Element:
    # HL7 is the default namespace, as every sender writes it (lxml-stubs type nsmap keys as str only).
    nsmap = {None: HL7, "npfitlc": NPFITLC, "xsi": XSI}
    cd = etree.Element(f"{{{HL7}}}ClinicalDocument", nsmap=nsmap)  # type: ignore[arg-type]
    cd.set("classCode", "DOCCLIN")
    cd.set("moodCode", "EVN")
    _el(cd, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    etree.SubElement(
        cd, f"{{{NPFITLC}}}messageType", root="2.16.840.1.113883.2.1.3.2.4.18.17", extension="POCD_MT200001GB02"
    )
    _el(cd, "id", root=new_id())
    _code(cd, "code", code, SNOMED)
    _el(cd, "title", title)
    time_element = _el(cd, "effectiveTime")
    if effective_time is not None:
        time_element.set("value", effective_time)
    _el(cd, "confidentialityCode", code=confidentiality, codeSystem="2.16.840.1.113883.1.11.16926")
    return cd


def report_document(report: Report, now: datetime) -> etree._Element:
    """The ClinicalDocument for ``report``, its times relative to ``now`` (aware) and every id new."""
    call = call_for(now, minutes_ago=report.minutes_ago, call_minutes=report.call_minutes, time_style=report.time_style)
    today = now.astimezone(LONDON).date()
    code = IUC_REPORT_CODE if report.iuc_v3 else REPORT_CODE
    cd = _document_root(code[1], code, call.ts(call.document_time), report.confidentiality)
    _el(cd, "setId", root=new_id())
    _el(cd, "versionNumber", value=str(report.version))
    _record_target(cd, report.patient, today)
    for author in report.authors:
        _author(cd, author, call.ts(call.end))
    if report.data_enterer is not None:
        _data_enterer(cd, report.data_enterer, call.ts(call.start))
    for informant in report.informants:
        _informant(cd, informant, call)
    _custodian(cd, report.custodian)
    for recipient in report.recipients:
        _recipient(cd, recipient)
    for participant in report.participants:
        _participant(cd, participant, call)
    if report.replaces_earlier:
        _related_document(cd)
    if report.consent is not None:
        _authorization(cd)
    _encompassing_encounter(cd, report, call)
    _body(cd, report, call, today)
    return cd


# -- the minimal document (validation tests) -----------------------------------------------------------------

MINIMAL_CUSTODIAN = Organisation("XSEND", "Synthetic 111 Service")
MINIMAL_PATIENT = Patient(
    name=Name(given=("Synthetic",), family="Testpatient"),
    gender="9",
    age=(44, 0),
    local_id="SYNTHETIC-PATIENT",
    #: A synthetic NHS number from the test range (valid modulus-11 check digit).
    nhs_number="9990001235",
)


def minimal_document(
    effective_time: str | None = "20240102103000+0000",
    *,
    pathways_base64: str | None = None,
    title: str = "Report",
    custodian: Organisation = MINIMAL_CUSTODIAN,
) -> etree._Element:
    """The smallest NHS 111 report valid against POCD_MT000002UK01.xsd, about a synthetic patient.

    ``effective_time`` is written verbatim (``None``: the attribute is left out); ``pathways_base64`` adds the
    ObservationMedia entry that carries a Pathways case.
    """
    cd = _document_root(f"Synthetic NHS 111 {title}", REPORT_CODE, effective_time, "N")
    _el(cd, "setId", root=new_id())
    _el(cd, "versionNumber", value="1")
    patient = MINIMAL_PATIENT
    record_target = _el(cd, "recordTarget", typeCode="RCT", contextControlCode="OP")
    _content_id(record_target, "COCD_TP145201GB01#PatientRole")
    role = _el(record_target, "patientRole", classCode="PAT")
    _template(role, "COCD_TP145201GB01#PatientRole")
    _el(role, "id", root=NHS_NUMBER_VERIFIED, extension=patient.nhs_number or "")
    person = _el(role, "patient", classCode="PSN", determinerCode="INSTANCE")
    _template(person, "COCD_TP145201GB01#patientPatient")
    _name(person, patient.name)
    _el(person, "administrativeGenderCode", code=patient.gender, codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25")
    _el(person, "birthTime", value="19800101")
    _author(
        cd,
        Clinician(name=Name(given=("Test",), family="Clinician"), user_id="SYNTHETIC-AUTHOR"),
        effective_time or "20240102103000+0000",
    )
    _custodian(cd, custodian)
    component = _el(cd, "component", typeCode="COMP", contextConductionInd="true")
    body = _el(component, "structuredBody", classCode="DOCBODY", moodCode="EVN")
    section = _el(_el(body, "component", typeCode="COMP", contextConductionInd="true"), "section")
    section.set("classCode", "DOCSECT")
    section.set("moodCode", "EVN")
    _el(section, "id", root=new_id())
    _el(section, "title", "Patient's Reported Condition")
    _el(section, "text", "Synthetic test report, no real patient.")
    if pathways_base64 is not None:
        entry = _entry(section, "COCD_TP146002GB01#ObservationMedia")
        media = _el(entry, "observationMedia", classCode="OBS", moodCode="EVN")
        _template(media, "COCD_TP146002GB01#ObservationMedia")
        _el(media, "id", root=new_id())
        _typed(_el(media, "value", pathways_base64, representation="B64", mediaType="text/xml"), "ED")
    return cd
