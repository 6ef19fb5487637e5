"""The vocabulary of the sample catalogue: small frozen descriptions of people, organisations, calls and triages.

A scenario (:class:`Scenario`) says *what* a synthetic NHS 111 message contains; :mod:`.cda`,
:mod:`.pathways` and :mod:`.envelope` decide *how* it is written on the wire. Nothing here carries an id or a
date: every id is generated and every time is an offset (minutes before the generation time), so that each
generation produces a fresh message with the same structure.

Everything described with these classes is made up: patients with NHS numbers from the test range, organisations
with invented ODS codes and Directory of Services ids, telephone numbers from Ofcom's drama ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "2.16.840.1.113883.2.1.3.2.4.15"

# -- people, places, organisations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """An HL7 AD: ``use`` is ``H`` (home), ``WP`` (work place) or ``PHYS`` (a physical place)."""

    lines: tuple[str, ...]
    city: str = ""
    postcode: str = ""
    use: str = "H"
    county: str = ""
    #: Free-text directions (``hl7:desc``): Address.text in FHIR.
    directions: str = ""


@dataclass(frozen=True)
class Telecom:
    """An HL7 TEL: ``value`` is a URL (``tel:``, ``mailto:``), ``use`` e.g. ``H``, ``MC``, ``WP``, ``EC``."""

    value: str
    use: str = ""


@dataclass(frozen=True)
class Name:
    """A structured person name; ``text`` alone gives a text-only name (``<name>Clinical Hub</name>``)."""

    given: tuple[str, ...] = ()
    family: str = ""
    prefix: str = ""
    text: str = ""


@dataclass(frozen=True)
class Organisation:
    """An organisation with its ODS code; ``dos_id`` is its Directory of Services id when it receives messages."""

    ods: str
    name: str
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()
    #: ``standardIndustryClassCode`` (code, displayName), e.g. ("001", "GP Practice").
    kind: tuple[str, str] | None = None
    dos_id: str | None = None
    #: The organisation this one is part of (a branch surgery of a practice): Organization.partOf.
    part_of: Organisation | None = None


@dataclass(frozen=True)
class Clinician:
    """A person working for an organisation: author, responsible party, data enterer or professional informant.

    ``role`` is an SDS job role (code, displayName).
    """

    name: Name
    user_id: str
    role: tuple[str, str] | None = None
    organisation: Organisation | None = None
    telecoms: tuple[Telecom, ...] = ()


@dataclass(frozen=True)
class Guardian:
    """A patient's guardian: a person, or an organisation (a local authority for a child in care)."""

    name: Name | None = None
    organisation: Organisation | None = None
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()


@dataclass(frozen=True)
class Patient:
    """The patient (``hl7:recordTarget``). ``age`` is (years, extra days) at generation time.

    ``nhs_number`` ``None`` means the patient has none (a visitor): only the provider's local id is sent.
    """

    name: Name
    gender: str  # administrativeGenderCode: 1 male, 2 female, 9 not specified
    age: tuple[int, int]
    local_id: str
    nhs_number: str | None = None
    nhs_number_verified: bool = True
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()
    gp: Organisation | None = None
    language: str = "en"
    marital_status: str | None = None
    #: Ethnic category (code, displayName), NHS data dictionary.
    ethnic_group: tuple[str, str] | None = None
    guardian: Guardian | None = None


@dataclass(frozen=True)
class RelatedInformant:
    """A relative or carer who called 111 about the patient (``informant/relatedEntity``).

    ``relationship`` is a person relationship type (code, displayName).
    """

    name: Name
    relationship: tuple[str, str]
    telecoms: tuple[Telecom, ...] = ()
    address: Address | None = None


@dataclass(frozen=True)
class ProfessionalInformant:
    """A health or care professional who called 111 about the patient (``informant/assignedEntity``)."""

    clinician: Clinician


Informant = RelatedInformant | ProfessionalInformant


@dataclass(frozen=True)
class Recipient:
    """An ``informationRecipient``: ``PRCP`` (primary: a HealthcareService) or ``TRC`` (tracker: copy only)."""

    organisation: Organisation
    type_code: str = "PRCP"


@dataclass(frozen=True)
class Participant:
    """A document ``participant``: ``REFT`` (the service referred to) or ``CALLBCK`` (who will call back)."""

    type_code: str
    name: Name | None = None
    organisation: Organisation | None = None
    telecoms: tuple[Telecom, ...] = ()
    address: Address | None = None
    #: (code, displayName) of the participant's role, e.g. ("01", "Call Centre").
    role: tuple[str, str] | None = None
    #: Minutes after the document time during which the participant acts (CALLBCK window): low, high.
    window: tuple[int, int] | None = None


# -- the clinical content ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disposition:
    """A Pathways disposition (Dx code and its text)."""

    code: str
    text: str


@dataclass(frozen=True)
class Section:
    """A narrative section of the report: each paragraph becomes one ``<content>`` of the section text.

    ``code`` is a SNOMED CT (code, displayName) when the section has a coded meaning (the mapping recognises
    "Information and advice given", "Consent for information sharing" and "Appointment" by code).
    ``rows`` gives a two-column table (header, value) instead of paragraphs.
    """

    title: str
    paragraphs: tuple[str, ...] = ()
    code: tuple[str, str] | None = None
    rows: tuple[tuple[str, str], ...] = ()
    children: tuple[Section, ...] = ()


@dataclass(frozen=True)
class Appointment:
    """An appointment booked by 111 at the receiving service, ``in_minutes`` after the document time."""

    in_minutes: int
    place: Organisation
    description: str
    reason: tuple[str, str] = ("01", "Patient convenience appointment")


@dataclass(frozen=True)
class Consent:
    """Consent to share the record (``authorization/consent``) and Permission to View for ``days``."""

    days: int = 14


@dataclass(frozen=True)
class IncidentLocation:
    """Where the patient was when 111 was called (``encompassingEncounter/location``)."""

    address: Address
    name: str = "Incident Location"


# -- Pathways ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A Pathways question, its possible answers and the index of the one chosen."""

    id: str
    text: str
    answers: tuple[str, ...]
    chosen: int
    rationale: str = ""


@dataclass(frozen=True)
class CareAdvice:
    """A care advice topic shown to the caller, with its items."""

    id: str
    topic: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class TriageLine:
    """One line of a Pathways triage: a question asked, a disposition reached, or care advice given.

    ``kind`` is the Pathways ``questionType`` (``SingleAnswer``, ``Disposition``, ``HomeCareAdvice``, ...).
    """

    kind: str
    report: str
    question: Question | None = None
    care_advice: tuple[CareAdvice, ...] = ()
    comment: str = ""
    positive: bool = True


@dataclass(frozen=True)
class PathwaysUser:
    """The 111 staff member who ran a triage; ``skill_set`` T1-T4 (T1 health advisor ... T3/T4 clinician)."""

    id: str
    name: str
    skill_set: str


@dataclass(frozen=True)
class Triage:
    """One ``pathwayTriage``: who ran it, on which pathway, the lines, and the dispositions reached."""

    user: PathwaysUser
    pathway_id: str
    lines: tuple[TriageLine, ...]
    initial: Disposition
    final: Disposition


@dataclass(frozen=True)
class PathwaysRecord:
    """The Pathways case attached (base64) to the report: one or more triages of the same call."""

    condition: str
    triages: tuple[Triage, ...]
    caller_is_patient: bool = True


# -- documents and scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One ClinicalDocument: an NHS 111 report about one call.

    ``minutes_ago`` places the document before the generation time. ``time_style`` is ``offset`` (London local
    time with its UTC offset, ``20250601143005+0100``) or ``local`` (no offset: Europe/London time implied).
    """

    patient: Patient
    authors: tuple[Clinician, ...]
    custodian: Organisation
    disposition: Disposition
    #: Patient's reported condition: the presenting complaint in the caller's words.
    complaint: tuple[str, ...]
    consultation: tuple[str, ...]
    minutes_ago: int = 30
    call_minutes: int = 20
    time_style: str = "offset"
    iuc_v3: bool = False
    confidentiality: str = "N"
    version: int = 1
    #: This document replaces an earlier version (relatedDocument RPLC).
    replaces_earlier: bool = False
    recipients: tuple[Recipient, ...] = ()
    participants: tuple[Participant, ...] = ()
    informants: tuple[Informant, ...] = ()
    data_enterer: Clinician | None = None
    responsible_party: Clinician | None = None
    incident_location: IncidentLocation | None = None
    consent: Consent | None = None
    appointment: Appointment | None = None
    #: SNOMED CT (code, displayName) of the clinical discriminator: Condition.code.
    discriminator: tuple[str, str] | None = None
    pathways: PathwaysRecord | None = None
    #: Further narrative sections (safeguarding concern, ambulance dispatch, special notes ...).
    sections: tuple[Section, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """One sample message: its file name, the ITK interaction, where it is addressed, and its documents."""

    name: str
    summary: str
    exercises: str
    interaction: str
    sender: Organisation
    #: ``itk:address`` entries: ("ods", code) or ("dos", id), in the order they are written.
    addresses: tuple[tuple[str, str], ...]
    reports: tuple[Report, ...]
    service: str = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"
    profile_id: str = "urn:nhs-en:profile:nhs111CDADocument-v2-0"
    username: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.xml"


@dataclass(frozen=True)
class Nullification:
    """A nullification (nullification.md): the 111 service withdraws the document of the catalogue scenario
    ``withdraws``, sent in error, ``minutes_later`` minutes after that document was written. It is sent to the
    same recipients, by the same sender, about the same patient.

    ``reason`` is a (code, displayName) of code system ``2.16.840.1.113883.2.1.3.2.4.17.176`` and ``reason_text``
    the "Reason for Withdrawal" narrative; ``author`` withdraws it.
    """

    name: str
    summary: str
    exercises: str
    withdraws: str
    interaction: str
    author: Clinician
    reason: tuple[str, str]
    reason_text: str
    minutes_later: int = 10
    profile_id: str = "urn:nhs-en:profile:nullificationDocument-v5-0"

    @property
    def file_name(self) -> str:
        return f"{self.name}.xml"
