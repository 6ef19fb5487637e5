"""Sample scenario ``several-triages``: a Pathways record with several triages."""

from __future__ import annotations

from adaptor.samples.model import Address, Consent, Name, PathwaysRecord, Patient, Recipient, Report, Scenario, Triage
from adaptor.samples.scenarios.parties import (
    OOH,
    SAMPLESHIRE_OOH,
    TESTBURY_LANE_PRACTICE,
    TESTVALE_ADVISER,
    TESTVALE_CLINICIAN,
    TESTVALE_CLINICIAN_USER,
    TESTVALE_HA_USER,
    TESTVALE_IUC,
    TESTVALE_IUC_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX06, DX32, advice, ask, pathway, reached, triage, yes_no

SCENARIO = Scenario(
    name="several-triages",
    summary="Severe headache: health adviser triage, clinician re-triage, then a second pathway; GP within 6 hours",
    exercises="Pathways case with three triages by two users (QuestionnaireResponse pairs for every line of every "
    "triage), two authors (two PractitionerRoles), two care advice sections (two CarePlans)",
    interaction=OOH,
    sender=TESTVALE_IUC,
    addresses=(("dos", "9004401"), ("ods", "XOH401")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Fatima",), "Demoson", "Dr"),
                gender="2",
                age=(39, 18),
                local_id="SYN-P-0011",
                nhs_number="9991000852",
                address=Address(("The Old Forge", "Lower Green"), "Testbury", "XT2 6OF"),
                telecoms=(tel("01632960111", "H"), tel("07700900111", "MC")),
                gp=TESTBURY_LANE_PRACTICE,
                marital_status="S",
            ),
            authors=(TESTVALE_ADVISER, TESTVALE_CLINICIAN),
            custodian=TESTVALE_IUC,
            disposition=DX06,
            call_minutes=28,
            complaint=("Bad headache since lunchtime, light hurts the eyes.",),
            consultation=(
                "Health adviser triage reached a clinician call-back; warm transferred.",
                "Gradual onset headache over four hours, 7/10, some sensitivity to light, no neck stiffness.",
                "No rash, no fever, no head injury. Similar headaches in the past, usually with her period.",
                "Blurred vision in one eye for ten minutes earlier, now resolved: visual problems pathway checked.",
            ),
            recipients=(Recipient(SAMPLESHIRE_OOH),),
            consent=Consent(days=14),
            discriminator=("25064002", "Headache"),
            pathways=PathwaysRecord(
                condition="Severe headache",
                triages=(
                    triage(
                        TESTVALE_HA_USER,
                        "PA88",
                        "Headache",
                        (
                            ask(
                                "Tx231002",
                                "How bad is the headache?",
                                ("mild", "moderate", "the worst ever"),
                                1,
                                "The headache was described as moderate to severe.",
                            ),
                            yes_no(
                                "Tx231009",
                                "Does light hurt the eyes?",
                                True,
                                "Light sensitivity was described.",
                            ),
                        ),
                        DX32,
                        advice(
                            "CX3101",
                            "Waiting for a clinician",
                            "Stay by the phone: a clinician will call you back now.",
                        ),
                    ),
                    Triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA88",
                        (
                            pathway("Headache"),
                            yes_no(
                                "Tx231030",
                                "Did the headache come on suddenly, like a blow to the head?",
                                False,
                                "A sudden-onset headache was not described.",
                            ),
                            yes_no(
                                "Tx231036",
                                "Is there a stiff neck or a rash?",
                                False,
                                "No stiff neck or rash was described.",
                            ),
                        ),
                        DX06,
                        DX06,
                    ),
                    Triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA95",
                        (
                            pathway("Eye or Eyelid Problems"),
                            yes_no(
                                "Tx231102",
                                "Is the vision still blurred now?",
                                False,
                                "Blurred vision had resolved.",
                            ),
                            reached(DX06),
                            advice(
                                "CX3102",
                                "Headache",
                                "Rest in a quiet, dark room and take paracetamol as the packet says.",
                                "Call back straight away if the headache suddenly gets much worse or your vision "
                                "changes again.",
                            ),
                        ),
                        DX06,
                        DX06,
                    ),
                ),
            ),
        ),
    ),
    username=TESTVALE_IUC_USERNAME,
)
