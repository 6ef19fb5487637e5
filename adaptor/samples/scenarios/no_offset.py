"""Sample scenario ``no-offset``: effectiveTime and every other time without a UTC offset."""

from __future__ import annotations

from adaptor.samples.model import Address, Consent, Name, PathwaysRecord, Patient, Recipient, Report, Scenario
from adaptor.samples.scenarios.parties import (
    ED,
    SAMPLETON_ED,
    TESTBURY_LANE_PRACTICE,
    TESTVALE_CLINICIAN,
    TESTVALE_CLINICIAN_USER,
    TESTVALE_IUC,
    TESTVALE_IUC_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX03, advice, triage, yes_no

SCENARIO = Scenario(
    name="no-offset",
    summary="Fall from a ladder with a painful, swollen wrist; attend ED within 4 hours (times without UTC offset)",
    exercises="effectiveTime and every other time written without an offset (Europe/London local time), Pathways "
    "times without a zone, non-ASCII patient name, a second sending organisation",
    interaction=ED,
    sender=TESTVALE_IUC,
    addresses=(("ods", "XED201"), ("dos", "9002201")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Tomasz",), "Przykład", "Mr"),
                gender="1",
                age=(52, 77),
                local_id="SYN-P-0010",
                nhs_number="9991000712",
                address=Address(("11 Kiln Street",), "Sampleton", "XS3 2KS"),
                telecoms=(tel("07700900100", "MC"),),
                gp=TESTBURY_LANE_PRACTICE,
            ),
            authors=(TESTVALE_CLINICIAN,),
            custodian=TESTVALE_IUC,
            disposition=DX03,
            time_style="local",
            complaint=("Fell off a step ladder, left wrist painful and swollen.",),
            consultation=(
                "Fell about 1 metre onto an outstretched left hand an hour ago.",
                "Wrist swollen and painful to move, fingers pink and warm, can move them.",
                "No head injury, no other pain.",
            ),
            recipients=(Recipient(SAMPLETON_ED),),
            consent=Consent(days=7),
            discriminator=("125596004", "Injury of wrist"),
            pathways=PathwaysRecord(
                condition="Wrist injury after a fall",
                triages=(
                    triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA145",
                        "Wrist, Hand or Finger Injury",
                        (
                            yes_no(
                                "Tx230004",
                                "Is the hand or are the fingers cold, blue or numb?",
                                False,
                                "The fingers were not cold, blue or numb.",
                            ),
                            yes_no(
                                "Tx230012",
                                "Is the wrist deformed or very swollen?",
                                True,
                                "The wrist was swollen.",
                            ),
                        ),
                        DX03,
                        advice(
                            "CX3001",
                            "Wrist injury",
                            "Take off rings and watches from that hand.",
                            "Support the arm in a sling or on a pillow and use a cold pack wrapped in a towel.",
                        ),
                    ),
                ),
            ),
        ),
    ),
    username=TESTVALE_IUC_USERNAME,
)
