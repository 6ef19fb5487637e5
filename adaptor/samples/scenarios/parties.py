"""Who the sample scenarios are about, besides their patients: the ITK interactions the services use, the
organisations (senders and recipients) and the 111 staff with their Pathways logins.
"""

from __future__ import annotations

from adaptor.itk.wire import INTERACTION_PREFIX
from adaptor.samples.model import Address, Clinician, Name, Organisation, PathwaysUser, Telecom

# == interactions and profiles (wire-contract.md §3) ==========================================================

GP = f"{INTERACTION_PREFIX}primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0"
ED = f"{INTERACTION_PREFIX}primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0"
OOH = f"{INTERACTION_PREFIX}primaryOutofHourRecipientNHS111CDADocument-v2-0"
COPY = f"{INTERACTION_PREFIX}copyRecipientNHS111CDADocument-v2-0"
REPEAT_CALLER_SET = f"{INTERACTION_PREFIX}primaryNHS111RepeatCallerDocumentSet-v1-0"
GP_IUC = f"{INTERACTION_PREFIX}primaryGeneralPractitionerRecipientIntegratedUrgentCareCDADocument-v3-0"
IUC_PROFILE = "urn:nhs-en:profile:IntegratedUrgentCareCDADocument-v3-1"
#: The 111 (v2) messaging specification's nullification (nullification.md §1).
NULLIFY_111 = f"{INTERACTION_PREFIX}nullifyNHS111CDADocument-v1-0"

# == organisations ============================================================================================

GP_PRACTICE = ("001", "GP Practice")


def tel(number: str, use: str = "WP") -> Telecom:
    """A telephone number (``tel:`` URI); ``use`` WP work, H home, MC mobile, EC emergency contact."""
    return Telecom(f"tel:{number}", use)


SAMPLESHIRE_111 = Organisation(
    "X1S01",
    "Sampleshire NHS 111",
    Address(("Unit 4", "Exampleton Business Park"), "Exampleton", "XS1 4AB", "WP"),
    (tel("01632960100"),),
)
#: The sending service's user name (its TLS client certificate's subject), as the SOAP header carries it.
SAMPLESHIRE_111_USERNAME = "CN=x1s01.sampleshire-111.synthetic"
TESTVALE_IUC = Organisation(
    "X1T02",
    "Testvale Integrated Urgent Care",
    Address(("Testvale House", "1 Placeholder Road"), "Testbury", "XT2 9ZZ", "WP"),
    (tel("01632960200"),),
)
TESTVALE_IUC_USERNAME = "CN=x1t02.testvale-iuc.synthetic"

EXAMPLETON_HEALTH_CENTRE = Organisation(
    "XGP101",
    "Exampleton Health Centre",
    Address(("Exampleton Health Centre", "2 Market Street"), "Exampleton", "XS1 2HC", "WP"),
    (tel("01632960101"),),
    kind=GP_PRACTICE,
    dos_id="9001101",
)
SAMPLETON_ED = Organisation(
    "XED201",
    "Sampleton General Hospital Emergency Department",
    Address(("Sampleton General Hospital", "Infirmary Way"), "Sampleton", "XS3 1ED", "WP"),
    (tel("01632960201"),),
    dos_id="9002201",
)
TESTBURY_UTC = Organisation(
    "XUT301",
    "Testbury Urgent Treatment Centre",
    Address(("Testbury Community Hospital", "Mill Lane"), "Testbury", "XT2 3UT", "WP"),
    (tel("01632960301"),),
    dos_id="9003301",
)
SAMPLESHIRE_OOH = Organisation(
    "XOH401",
    "Sampleshire GP Out of Hours Service",
    Address(("Sampleshire Urgent Care Hub", "5 Station Approach"), "Sampleton", "XS3 4OH", "WP"),
    (tel("01632960401"),),
    dos_id="9004401",
)
MOCKFORD_MAIN = Organisation(
    "XGP501",
    "Mockford Medical Group, Main Surgery",
    Address(("Mockford Medical Group", "10 High Street"), "Mockford", "XM5 1MG", "WP"),
    (tel("01632960501"),),
    kind=GP_PRACTICE,
    dos_id="9005501",
)
MOCKFORD_BRANCH = Organisation(
    "XGP502",
    "Mockford Medical Group, Riverside Branch Surgery",
    Address(("Riverside Branch Surgery", "3 Towpath Walk"), "Mockford", "XM5 7RB", "WP"),
    (tel("01632960502"),),
    kind=GP_PRACTICE,
    dos_id="9005502",
    part_of=MOCKFORD_MAIN,
)
DEMOFORD_SURGERY = Organisation(
    "XGP601",
    "Demoford Surgery",
    Address(("Demoford Surgery", "Church Road"), "Demoford", "XD6 1DS", "WP"),
    (tel("01632960601"),),
    kind=GP_PRACTICE,
    dos_id="9006601",
)
TESTBURY_LANE_PRACTICE = Organisation(
    "XGP701",
    "Testbury Lane Practice",
    Address(("Testbury Lane Practice", "44 Testbury Lane"), "Testbury", "XT2 7LP", "WP"),
    (tel("01632960701"),),
    kind=GP_PRACTICE,
    dos_id="9007701",
)
SAMPLESHIRE_CHILDRENS_SERVICES = Organisation(
    "XLA901",
    "Sampleshire County Council Children's Services",
    Address(("County Hall", "Sample Square"), "Sampleton", "XS3 9CC", "WP"),
    (tel("01632960901"),),
)

# == 111 staff ================================================================================================

CLINICAL_ROLE = ("R8000", "Clinical Practitioner Access Role")
HEALTH_PROFESSIONAL_ROLE = ("R8003", "Health Professional Access Role")
ADVISOR_ROLE = ("R8008", "Admin/Clinical Support Access Role")
MEDICAL_DIRECTOR_ROLE = ("R0010", "Medical Director")

NURSE_ADVISER = Clinician(Name(("Jamie",), "Fictional"), "SYN-CA-0101", CLINICAL_ROLE, SAMPLESHIRE_111)
PARAMEDIC_ADVISER = Clinician(Name(("Morgan",), "Madeup"), "SYN-CA-0102", CLINICAL_ROLE, SAMPLESHIRE_111)
HEALTH_ADVISER = Clinician(Name(("Robin",), "Placeholder"), "SYN-HA-0201", ADVISOR_ROLE, SAMPLESHIRE_111)
SAMPLESHIRE_LEAD = Clinician(
    Name(("Alex",), "Notreal", "Dr"), "SYN-MD-0001", MEDICAL_DIRECTOR_ROLE, SAMPLESHIRE_111, (tel("01632960199"),)
)
TESTVALE_CLINICIAN = Clinician(Name(("Casey",), "Imaginary"), "SYN-CA-0301", CLINICAL_ROLE, TESTVALE_IUC)
TESTVALE_ADVISER = Clinician(Name(("Riley",), "Pretend"), "SYN-HA-0302", ADVISOR_ROLE, TESTVALE_IUC)
TESTVALE_GP = Clinician(Name(("Sasha",), "Hypothetical", "Dr"), "SYN-GP-0303", HEALTH_PROFESSIONAL_ROLE, TESTVALE_IUC)

HA_USER = PathwaysUser("SYN0201", "PLACEHOLDER, Robin", "T1")
NURSE_USER = PathwaysUser("SYN0101", "FICTIONAL, Jamie", "T3")
PARAMEDIC_USER = PathwaysUser("SYN0102", "MADEUP, Morgan", "T3")
TESTVALE_HA_USER = PathwaysUser("SYN0302", "PRETEND, Riley", "T1")
TESTVALE_CLINICIAN_USER = PathwaysUser("SYN0301", "IMAGINARY, Casey", "T3")
TESTVALE_GP_USER = PathwaysUser("SYN0303", "HYPOTHETICAL, Sasha", "T4")
