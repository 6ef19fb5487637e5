"""Synthetic NHS 111 ClinicalDocuments in the on-the-wire CDA format (``POCD_MT000002UK01``).

:func:`report_document` writes a :class:`~.model.Report` as a full NHS 111 report, in the element order of the
schema and with the templates and content ids live senders use: patient with GP practice, authors, informants,
custodian, recipients, participants, consent, the encompassing encounter with its Pathways disposition, and a
structured body whose top-level section carries the coded entries (Pathways case, Permission to View, clinical
discriminator, appointment) and the narrative sections the mapping reads (mapping.md §3).

:func:`minimal_document` writes the smallest valid report, for tests that change one element at a time.

The HL7 data types and the common participation pieces (addresses, names, organisations, ids) are in :mod:`.hl7`.

Times are written as HL7 TS. A report's times all derive from one instant (the document time) so that a message
generated later has later times but the same shape.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta

from lxml import etree

from adaptor.itk.wire import new_upper_uuid
from adaptor.itk.xmlsafe import HL7, NPFITLC
from adaptor.samples import hl7, pathways
from adaptor.samples.hl7 import ODS_CODE, XSI
from adaptor.samples.model import (
    SNOMED,
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
)
from adaptor.samples.timing import LONDON, Call, birth_date, call_for, human

#: OIDs used by the templates (NHS CDA "on the wire" conventions; the common ones are in :mod:`.hl7`).
NHS_NUMBER_VERIFIED = "2.16.840.1.113883.2.1.4.1"
NHS_NUMBER_UNVERIFIED = "2.16.840.1.113883.2.1.3.2.4.18.23"
LOCAL_ID = "2.16.840.1.113883.2.1.3.2.4.18.24"
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

# -- participations ------------------------------------------------------------------------------------------


def write_record_target(cd: etree._Element, patient: Patient, today: date) -> None:
    record_target = hl7.el(cd, "recordTarget", typeCode="RCT", contextControlCode="OP")
    hl7.content_id(record_target, "COCD_TP145201GB01#PatientRole")
    role = hl7.el(record_target, "patientRole", classCode="PAT")
    hl7.template_id(role, "COCD_TP145201GB01#PatientRole")
    if patient.nhs_number is not None:
        root = NHS_NUMBER_VERIFIED if patient.nhs_number_verified else NHS_NUMBER_UNVERIFIED
        hl7.el(role, "id", root=root, extension=patient.nhs_number)
    hl7.el(role, "id", root=LOCAL_ID, extension=patient.local_id, assigningAuthorityName="Synthetic 111 Record")
    if patient.address is not None:
        hl7.addr(role, patient.address)
    hl7.telecoms(role, patient.telecoms)

    person = hl7.el(role, "patient", classCode="PSN", determinerCode="INSTANCE")
    hl7.template_id(person, "COCD_TP145201GB01#patientPatient")
    hl7.person_name(person, patient.name)
    genders = {"1": "Male", "2": "Female", "9": "Not Specified"}
    hl7.el(
        person,
        "administrativeGenderCode",
        code=patient.gender,
        codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25",
        displayName=genders.get(patient.gender, "Not Known"),
    )
    hl7.el(person, "birthTime", value=birth_date(patient.age, today).strftime("%Y%m%d"))
    if patient.marital_status is not None:
        hl7.el(person, "maritalStatusCode", code=patient.marital_status, codeSystem="2.16.840.1.113883.5.2")
    if patient.ethnic_group is not None:
        hl7.coded(person, "ethnicGroupCode", patient.ethnic_group, "2.16.840.1.113883.2.1.3.2.4.16.6")
    if patient.guardian is not None:
        _guardian(person, patient.guardian)
    language = hl7.el(person, "languageCommunication")
    hl7.template_id(language, "COCD_TP145201GB01#languageCommunication")
    hl7.el(language, "languageCode", code=patient.language)
    hl7.el(language, "preferenceInd", value="true")
    if patient.gp is not None:
        hl7.org(role, "providerOrganization", "COCD_TP145201GB01#providerOrganization", patient.gp)


def _guardian(person: etree._Element, guardian: Guardian) -> None:
    element = hl7.el(person, "guardian", classCode="GUARD")
    hl7.template_id(element, "COCD_TP145201GB01#guardian")
    if guardian.address is not None:
        hl7.addr(element, guardian.address)
    hl7.telecoms(element, guardian.telecoms)
    if guardian.organisation is not None:
        hl7.org(element, "guardianOrganization", "COCD_TP145201GB01#guardianOrganization", guardian.organisation)
    elif guardian.name is not None:
        hl7.person(element, "guardianPerson", "COCD_TP145201GB01#guardianPerson", guardian.name)


def _clinician(parent: etree._Element, tag: str, template: str, clinician: Clinician) -> None:
    """assignedAuthor / assignedEntity: id, job role, telecom, the person and their organisation."""
    entity = hl7.el(parent, tag, classCode="ASSIGNED")
    hl7.template_id(entity, f"{template}#{tag[0].upper()}{tag[1:]}")
    hl7.el(entity, "id", root=LOCAL_ID, extension=clinician.user_id)
    if clinician.role is not None:
        hl7.coded(entity, "code", clinician.role, JOB_ROLE_SYSTEM)
    hl7.telecoms(entity, clinician.telecoms)
    hl7.person(entity, "assignedPerson", f"{template}#assignedPerson", clinician.name)
    if clinician.organisation is not None:
        hl7.org(entity, "representedOrganization", f"{template}#representedOrganization", clinician.organisation)


def write_author(cd: etree._Element, clinician: Clinician, time: str) -> None:
    author = hl7.el(cd, "author", typeCode="AUT", contextControlCode="OP")
    hl7.content_id(author, "COCD_TP145200GB01#AssignedAuthor")
    hl7.el(
        author,
        "functionCode",
        code="OA",
        codeSystem="2.16.840.1.113883.2.1.3.2.4.17.178",
        displayName="Originating Author",
    )
    hl7.el(author, "time", value=time)
    _clinician(author, "assignedAuthor", "COCD_TP145200GB01", clinician)


def _data_enterer(cd: etree._Element, clinician: Clinician, time: str) -> None:
    enterer = hl7.el(cd, "dataEnterer", typeCode="ENT", contextControlCode="OP")
    hl7.content_id(enterer, "COCD_TP145210GB01#AssignedEntity")
    hl7.el(enterer, "time", value=time)
    _clinician(enterer, "assignedEntity", "COCD_TP145210GB01", clinician)


def _informant(cd: etree._Element, informant: Informant, call: Call) -> None:
    element = hl7.el(cd, "informant", typeCode="INF", contextControlCode="OP")
    if isinstance(informant, ProfessionalInformant):
        hl7.content_id(element, "COCD_TP145210GB01#AssignedEntity")
        _clinician(element, "assignedEntity", "COCD_TP145210GB01", informant.clinician)
        return
    hl7.content_id(element, "COCD_TP145007UK05#RelatedEntity")
    related = hl7.el(element, "relatedEntity", classCode="PRS")
    hl7.template_id(related, "COCD_TP145007UK05#RelatedEntity")
    hl7.coded(related, "code", informant.relationship, RELATIONSHIP_SYSTEM)
    if informant.address is not None:
        hl7.addr(related, informant.address)
    hl7.telecoms(related, informant.telecoms)
    # The relationship as it stood during the call: RelatedPerson.period.
    hl7.interval(related, "effectiveTime", call.ts(call.start), call.ts(call.end))
    hl7.person(related, "relatedPerson", "COCD_TP145007UK05#relationshipHolder", informant.name)


def write_custodian(cd: etree._Element, organisation: Organisation) -> None:
    custodian = hl7.el(cd, "custodian", typeCode="CST")
    hl7.content_id(custodian, "COCD_TP145018UK03#AssignedCustodian")
    assigned = hl7.el(custodian, "assignedCustodian", classCode="ASSIGNED")
    hl7.template_id(assigned, "COCD_TP145018UK03#AssignedCustodian")
    represented = hl7.el(assigned, "representedCustodianOrganization", classCode="ORG", determinerCode="INSTANCE")
    hl7.template_id(represented, "COCD_TP145018UK03#representedCustodianOrganization")
    hl7.el(represented, "id", root=ODS_CODE, extension=organisation.ods)
    hl7.el(represented, "name", organisation.name)
    if organisation.telecoms:
        hl7.telecoms(represented, organisation.telecoms[:1])
    if organisation.address is not None:
        hl7.addr(represented, organisation.address)


def write_recipient(cd: etree._Element, recipient: Recipient) -> None:
    element = hl7.el(cd, "informationRecipient", typeCode=recipient.type_code)
    hl7.content_id(element, "COCD_TP145203GB03#IntendedRecipient")
    intended = hl7.el(element, "intendedRecipient", classCode="ASSIGNED")
    hl7.template_id(intended, "COCD_TP145203GB03#IntendedRecipient")
    organisation = recipient.organisation
    if organisation.address is not None:
        hl7.addr(intended, organisation.address)
    hl7.telecoms(intended, organisation.telecoms)
    hl7.org(intended, "receivedOrganization", "COCD_TP145203GB03#representedOrganization", organisation)


def _participant(cd: etree._Element, participant: Participant, call: Call) -> None:
    if participant.type_code == "REFT":
        template = "COCD_TP145214GB01#AssociatedEntity"
    else:
        template = "COCD_TP145212GB02#Workgroup"
    element = hl7.el(cd, "participant", typeCode=participant.type_code, contextControlCode="OP")
    hl7.content_id(element, template)
    if participant.window is not None:
        low, high = (call.document_time + timedelta(minutes=m) for m in participant.window)
        hl7.interval(element, "time", call.ts(low), call.ts(high))
    entity = hl7.el(element, "associatedEntity", classCode="ASSIGNED")
    hl7.template_id(entity, template)
    if participant.organisation is not None:
        hl7.el(entity, "id", root=ODS_CODE, extension=participant.organisation.ods)
    if participant.role is not None:
        hl7.coded(entity, "code", participant.role, "2.16.840.1.113883.2.1.3.2.4.17.266")
    if participant.address is not None:
        hl7.addr(entity, participant.address)
    hl7.telecoms(entity, participant.telecoms)
    if participant.name is not None:
        hl7.person(entity, "associatedPerson", template.split("#")[0] + "#assignedPerson", participant.name)
    if participant.organisation is not None:
        hl7.org(
            entity, "scopingOrganization", template.split("#")[0] + "#scopingOrganization", participant.organisation
        )


def _related_document(cd: etree._Element) -> None:
    related = hl7.el(cd, "relatedDocument", typeCode="RPLC")
    parent = hl7.el(related, "parentDocument", classCode="DOCCLIN", moodCode="EVN")
    hl7.el(parent, "id", root=new_upper_uuid())


def _authorization(cd: etree._Element) -> None:
    authorization = hl7.el(cd, "authorization", typeCode="AUTH")
    hl7.content_id(authorization, "COCD_TP146226GB02#Consent")
    consent = hl7.el(authorization, "consent", classCode="CONS", moodCode="EVN")
    hl7.template_id(consent, "COCD_TP146226GB02#Consent")
    hl7.el(consent, "id", root=new_upper_uuid())
    hl7.coded(consent, "code", CONSENT_CODE, SNOMED)
    hl7.el(consent, "statusCode", code="completed")


def _encompassing_encounter(cd: etree._Element, report: Report, call: Call) -> None:
    component_of = hl7.el(cd, "componentOf", typeCode="COMP")
    hl7.content_id(component_of, "COCD_TP146232GB01#EncompassingEncounter")
    encounter = hl7.el(component_of, "encompassingEncounter", classCode="ENC", moodCode="EVN")
    hl7.template_id(encounter, "COCD_TP146232GB01#EncompassingEncounter")
    hl7.el(encounter, "id", root=CASE_GUID, extension=call.case_guid)
    hl7.el(encounter, "id", root=CASE_REFERENCE, extension=call.case_reference)
    hl7.el(
        encounter,
        "code",
        code="NHS111Encounter",
        codeSystem="2.16.840.1.113883.2.1.3.2.4.17.326",
        displayName="NHS111 Encounter",
    )
    hl7.interval(encounter, "effectiveTime", call.ts(call.start), call.ts(call.end))
    hl7.coded(
        encounter, "dischargeDispositionCode", (report.disposition.code, report.disposition.text), DISPOSITION_SYSTEM
    )
    if report.responsible_party is not None:
        responsible = hl7.el(encounter, "responsibleParty", typeCode="RESP")
        hl7.template_id(responsible, "COCD_TP146232GB01#responsibleParty")
        hl7.content_id(responsible, "COCD_TP145210GB01#AssignedEntity")
        _clinician(responsible, "assignedEntity", "COCD_TP145210GB01", report.responsible_party)
    if report.incident_location is not None:
        _incident_location(encounter, report.incident_location)


def _incident_location(encounter: etree._Element, incident: IncidentLocation) -> None:
    location = hl7.el(encounter, "location", typeCode="LOC")
    hl7.template_id(location, "COCD_TP146232GB01#location")
    hl7.content_id(location, "COCD_TP145222GB02#HealthCareFacility")
    facility = hl7.el(location, "healthCareFacility", classCode="ISDLOC")
    hl7.template_id(facility, "COCD_TP145222GB02#HealthCareFacility")
    hl7.el(facility, "id", nullFlavor="NA")
    place = hl7.el(facility, "location", classCode="PLC", determinerCode="INSTANCE")
    hl7.template_id(place, "COCD_TP145222GB02#location")
    hl7.el(place, "name", incident.name)
    hl7.addr(place, incident.address)


# -- the structured body -------------------------------------------------------------------------------------


def _entry(section: etree._Element, content_id: str) -> etree._Element:
    entry = hl7.el(section, "entry", typeCode="COMP", contextConductionInd="true")
    hl7.content_id(entry, content_id)
    return entry


def _observation_media(section: etree._Element, encoded: str) -> etree._Element:
    """The ObservationMedia entry that carries a Pathways case (``encoded``: base64)."""
    entry = _entry(section, "COCD_TP146002GB01#ObservationMedia")
    media = hl7.el(entry, "observationMedia", classCode="OBS", moodCode="EVN")
    hl7.template_id(media, "COCD_TP146002GB01#ObservationMedia")
    hl7.el(media, "id", root=new_upper_uuid())
    hl7.typed(hl7.el(media, "value", encoded, representation="B64", mediaType="text/xml"), "ED")
    return media


def _pathways_entry(section: etree._Element, encoded: str) -> None:
    """:func:`_observation_media` with the device that wrote the case, as live senders add it."""
    media = _observation_media(section, encoded)
    device = hl7.el(media, "participant", typeCode="DEV", contextControlCode="OP")
    hl7.template_id(device, "COCD_TP146002GB01#participant")
    hl7.content_id(device, "COCD_TP145000GB01#ParticipantRole")
    role = hl7.el(device, "participantRole", classCode="ROL")
    hl7.template_id(role, "COCD_TP145000GB01#ParticipantRole")
    hl7.el(role, "code", code="TS", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.418")
    playing = hl7.el(role, "playingDevice", classCode="DEV", determinerCode="INSTANCE")
    hl7.template_id(playing, "COCD_TP145000GB01#playingDevice")
    hl7.el(playing, "manufacturerModelName", displayName="Pathways")
    hl7.el(playing, "softwareName", displayName=pathways.CONTENT_VERSION)


def _permission_to_view(section: etree._Element, call: Call, days: int) -> None:
    entry = _entry(section, "COCD_TP146050GB01#PermissionToView")
    observation = hl7.el(entry, "observation", classCode="OBS", moodCode="EVN")
    hl7.template_id(observation, "COCD_TP146050GB01#PermissionToView")
    hl7.el(observation, "code", code="PTV", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.220")
    hl7.interval(observation, "effectiveTime", call.ts(call.end), call.ts(call.end + timedelta(days=days)))
    hl7.typed(hl7.el(observation, "value", code="01", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.524"), "CV")


def _discriminator(section: etree._Element, coded: tuple[str, str], system: str) -> None:
    entry = _entry(section, "COCD_TP146092GB01#ClinicalDiscriminator")
    observation = hl7.el(entry, "observation", classCode="OBS", moodCode="EVN")
    hl7.template_id(observation, "COCD_TP146092GB01#ClinicalDiscriminator")
    hl7.el(observation, "code", code="CD", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.540")
    hl7.typed(hl7.coded(observation, "value", coded, system), "CV")


def _appointment_entry(section: etree._Element, report: Report, call: Call) -> None:
    appointment = report.appointment
    assert appointment is not None
    entry = _entry(section, "COCD_TP146093GB01#AppointmentReference")
    encounter = hl7.el(entry, "encounter", classCode="ENC", moodCode="APT")
    hl7.template_id(encounter, "COCD_TP146093GB01#AppointmentReference")
    hl7.el(encounter, "id", root="2.16.840.1.113883.2.1.3.2.4.17.541", extension=new_upper_uuid().lower())
    hl7.coded(encounter, "code", appointment.reason, "2.16.840.1.113883.2.1.3.2.4.17.542")
    hl7.el(encounter, "effectiveTime", value=call.ts(call.document_time + timedelta(minutes=appointment.in_minutes)))
    participant = hl7.el(encounter, "participant", typeCode="LOC", contextControlCode="OP")
    hl7.template_id(participant, "COCD_TP146093GB01#location")
    role = hl7.el(participant, "participantRole", classCode="ASSIGNED")
    hl7.template_id(role, "COCD_TP146093GB01#assignedEntity")
    hl7.el(role, "id", root=ODS_CODE, extension=appointment.place.ods)
    if appointment.place.address is not None:
        hl7.addr(role, appointment.place.address)
    entity = hl7.el(role, "playingEntity", classCode="ORG", determinerCode="INSTANCE")
    hl7.template_id(entity, "COCD_TP146093GB01#assignedOrganization")
    hl7.el(entity, "name", appointment.place.name)
    hl7.el(entity, "desc", appointment.description)


def _section_text(section: etree._Element, spec: Section) -> None:
    if not spec.paragraphs and not spec.rows:
        return
    text = hl7.el(section, "text")
    for index, paragraph in enumerate(spec.paragraphs):
        if index:
            hl7.el(text, "br")
        hl7.el(text, "content", paragraph)
    if spec.rows:
        body = hl7.el(hl7.el(text, "table", width="100%"), "tbody")
        for header, value in spec.rows:
            row = hl7.el(body, "tr")
            hl7.el(row, "th", header)
            hl7.el(row, "td", value)


def _section(parent: etree._Element, spec: Section, level: int = 1) -> None:
    component = hl7.el(parent, "component", typeCode="COMP", contextConductionInd="true")
    if level == 1:
        hl7.content_id(component, "COCD_TP146246GB01#Section1")
    else:
        hl7.template_id(component, f"COCD_TP146246GB01#component{level - 1}")
    section = hl7.el(component, "section", classCode="DOCSECT", moodCode="EVN")
    hl7.template_id(section, "COCD_TP146246GB01#Section1" if level == 1 else f"COCD_TP146246GB01#section{level}")
    hl7.el(section, "id", root=new_upper_uuid())
    if spec.code is not None:
        hl7.coded(section, "code", spec.code, SNOMED)
    hl7.el(section, "title", spec.title)
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


def _top_section(cd: etree._Element) -> etree._Element:
    """The structuredBody and its one top-level section (with its id): the entries and sections go into it."""
    component = hl7.el(cd, "component", typeCode="COMP", contextConductionInd="true")
    body = hl7.el(component, "structuredBody", classCode="DOCBODY", moodCode="EVN")
    top = hl7.el(hl7.el(body, "component", typeCode="COMP", contextConductionInd="true"), "section")
    top.set("classCode", "DOCSECT")
    top.set("moodCode", "EVN")
    hl7.el(top, "id", root=new_upper_uuid())
    return top


def _body(cd: etree._Element, report: Report, call: Call, today: date) -> None:
    top = _top_section(cd)
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


def document_root(
    title: str,
    code: tuple[str, str],
    effective_time: str | None,
    confidentiality: str,
    message_type: str = "POCD_MT200001GB02",
) -> etree._Element:
    """A ClinicalDocument with its header up to ``confidentialityCode``: ``message_type`` is the conformance
    message type (an NHS 111 report's by default)."""
    # HL7 is the default namespace, as every sender writes it (lxml-stubs type nsmap keys as str only).
    nsmap = {None: HL7, "npfitlc": NPFITLC, "xsi": XSI}
    cd = etree.Element(f"{{{HL7}}}ClinicalDocument", nsmap=nsmap)  # type: ignore[arg-type]
    cd.set("classCode", "DOCCLIN")
    cd.set("moodCode", "EVN")
    hl7.el(cd, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    etree.SubElement(cd, f"{{{NPFITLC}}}messageType", root="2.16.840.1.113883.2.1.3.2.4.18.17", extension=message_type)
    hl7.el(cd, "id", root=new_upper_uuid())
    hl7.coded(cd, "code", code, SNOMED)
    hl7.el(cd, "title", title)
    time_element = hl7.el(cd, "effectiveTime")
    if effective_time is not None:
        time_element.set("value", effective_time)
    hl7.el(cd, "confidentialityCode", code=confidentiality, codeSystem="2.16.840.1.113883.1.11.16926")
    return cd


def report_document(report: Report, now: datetime) -> etree._Element:
    """The ClinicalDocument for ``report``, its times relative to ``now`` (aware) and every id new."""
    call = call_for(now, minutes_ago=report.minutes_ago, call_minutes=report.call_minutes, time_style=report.time_style)
    today = now.astimezone(LONDON).date()
    code = IUC_REPORT_CODE if report.iuc_v3 else REPORT_CODE
    cd = document_root(code[1], code, call.ts(call.document_time), report.confidentiality)
    hl7.el(cd, "setId", root=new_upper_uuid())
    hl7.el(cd, "versionNumber", value=str(report.version))
    write_record_target(cd, report.patient, today)
    for author in report.authors:
        write_author(cd, author, call.ts(call.end))
    if report.data_enterer is not None:
        _data_enterer(cd, report.data_enterer, call.ts(call.start))
    for informant in report.informants:
        _informant(cd, informant, call)
    write_custodian(cd, report.custodian)
    for recipient in report.recipients:
        write_recipient(cd, recipient)
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
    cd = document_root(f"Synthetic NHS 111 {title}", REPORT_CODE, effective_time, "N")
    hl7.el(cd, "setId", root=new_upper_uuid())
    hl7.el(cd, "versionNumber", value="1")
    patient = MINIMAL_PATIENT
    record_target = hl7.el(cd, "recordTarget", typeCode="RCT", contextControlCode="OP")
    hl7.content_id(record_target, "COCD_TP145201GB01#PatientRole")
    role = hl7.el(record_target, "patientRole", classCode="PAT")
    hl7.template_id(role, "COCD_TP145201GB01#PatientRole")
    hl7.el(role, "id", root=NHS_NUMBER_VERIFIED, extension=patient.nhs_number or "")
    person = hl7.el(role, "patient", classCode="PSN", determinerCode="INSTANCE")
    hl7.template_id(person, "COCD_TP145201GB01#patientPatient")
    hl7.person_name(person, patient.name)
    hl7.el(person, "administrativeGenderCode", code=patient.gender, codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25")
    hl7.el(person, "birthTime", value="19800101")
    write_author(
        cd,
        Clinician(name=Name(given=("Test",), family="Clinician"), user_id="SYNTHETIC-AUTHOR"),
        effective_time or "20240102103000+0000",
    )
    write_custodian(cd, custodian)
    section = _top_section(cd)
    hl7.el(section, "title", "Patient's Reported Condition")
    hl7.el(section, "text", "Synthetic test report, no real patient.")
    if pathways_base64 is not None:
        _observation_media(section, pathways_base64)
    return cd
