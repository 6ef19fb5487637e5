"""Sample scenario ``gp-referral``: a referral to the patient's GP practice for action."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Clinician,
    Consent,
    Name,
    Organisation,
    PathwaysRecord,
    Patient,
    ProfessionalInformant,
    Recipient,
    Report,
    Scenario,
    Section,
)
from adaptor.samples.scenarios.parties import (
    EXAMPLETON_HEALTH_CENTRE,
    GP,
    HEALTH_PROFESSIONAL_ROLE,
    NURSE_ADVISER,
    NURSE_USER,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    SAMPLESHIRE_LEAD,
    tel,
)
from adaptor.samples.scenarios.triage import DX05, WORSENING, advice, ask, triage, yes_no

PATIENT = Patient(
    name=Name(("Margaret", "Ada"), "Testwell", "Mrs"),
    gender="2",
    age=(84, 37),
    local_id="SYN-P-0001",
    nhs_number="9991000011",
    address=Address(("12 Willow Close", "Exampleton Green"), "Exampleton", "XS1 5WC"),
    telecoms=(tel("01632960011", "H"), tel("07700900011", "EC")),
    gp=EXAMPLETON_HEALTH_CENTRE,
    marital_status="W",
    ethnic_group=("A", "White - British"),
)

SCENARIO = Scenario(
    name="gp-referral",
    summary="District nurse calls about new confusion and a suspected urine infection; GP to act within 2 hours",
    exercises="GP primary interaction (DoS id listed before ODS code), professional informant, emergency contact, "
    "consent and Permission to View, responsible party, care advice, ethnic group and marital status",
    interaction=GP,
    sender=SAMPLESHIRE_111,
    addresses=(("dos", "9001101"), ("ods", "XGP101")),
    reports=(
        Report(
            patient=PATIENT,
            authors=(NURSE_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX05,
            complaint=(
                "More confused and sleepy than usual since this morning.",
                "Urine smells strong and she has not been drinking much for two days.",
            ),
            consultation=(
                "Call from the district nurse at the patient's home.",
                "New confusion; temperature 38.2 C measured by the nurse.",
                "Pain on passing urine reported yesterday. No chest pain, breathing normally.",
                "Type 2 diabetes, diet controlled. Lives alone; carers visit twice a day.",
            ),
            recipients=(Recipient(EXAMPLETON_HEALTH_CENTRE),),
            informants=(
                ProfessionalInformant(
                    Clinician(
                        Name(("Priya",), "Samplenurse"),
                        "SYN-DN-0501",
                        HEALTH_PROFESSIONAL_ROLE,
                        Organisation("XCN501", "Exampleton Community Nursing Team"),
                        (tel("07700900501", "MC"),),
                    )
                ),
            ),
            responsible_party=SAMPLESHIRE_LEAD,
            consent=Consent(days=14),
            discriminator=("68566005", "Urinary tract infectious disease"),
            pathways=PathwaysRecord(
                condition="New confusion, possible urine infection",
                caller_is_patient=False,
                triages=(
                    triage(
                        NURSE_USER,
                        "PA1210",
                        "Confusion",
                        (
                            yes_no(
                                "Tx221003",
                                "Is the individual fighting for breath?",
                                False,
                                "The individual was not fighting for breath.",
                            ),
                            yes_no(
                                "Tx221350",
                                "Has the confusion come on in the last 24 hours?",
                                True,
                                "New confusion had started in the last 24 hours.",
                            ),
                            ask(
                                "Tx221402",
                                "What is the temperature?",
                                ("below 38 C", "38 C or above", "not measured"),
                                1,
                                "A temperature of 38 C or above was reported.",
                            ),
                            yes_no(
                                "Tx221415",
                                "Is there any pain or burning when passing urine?",
                                True,
                                "Pain or burning when passing urine was described.",
                            ),
                        ),
                        DX05,
                        advice(
                            "CX2101",
                            "Confusion",
                            "Stay with her or make sure someone checks on her regularly until she has been seen.",
                            "Offer small, frequent drinks of water.",
                            *WORSENING.items,
                        ),
                    ),
                ),
            ),
            sections=(
                Section(
                    "Special Patient Notes",
                    ("Key safe in use: the district nursing team hold the access details.",),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
