"""Sample scenario ``repeat-caller``: a repeat caller: one message with a document per call."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Consent,
    Disposition,
    Name,
    PathwaysRecord,
    Patient,
    Recipient,
    Report,
    Scenario,
    Section,
    TriageLine,
)
from adaptor.samples.scenarios.parties import (
    NURSE_ADVISER,
    NURSE_USER,
    REPEAT_CALLER_SET,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    SAMPLESHIRE_OOH,
    TESTBURY_LANE_PRACTICE,
    tel,
)
from adaptor.samples.scenarios.triage import DX05, DX06, DX09, WORSENING, advice, triage, yes_no

PATIENT = Patient(
    name=Name(("Nadia",), "Testwood", "Ms"),
    gender="2",
    age=(34, 60),
    local_id="SYN-P-0007",
    nhs_number="9991000437",
    address=Address(("5 Quarry Hill",), "Sampleton", "XS3 5QH"),
    telecoms=(tel("07700900077", "MC"),),
    gp=TESTBURY_LANE_PRACTICE,
)


def _sore_throat_report(
    minutes_ago: int,
    disposition: Disposition,
    complaint: str,
    consultation: tuple[str, ...],
    lines: tuple[TriageLine, ...],
    advice_line: TriageLine,
    sections: tuple[Section, ...] = (),
) -> Report:
    return Report(
        patient=PATIENT,
        authors=(NURSE_ADVISER,),
        custodian=SAMPLESHIRE_111,
        disposition=disposition,
        minutes_ago=minutes_ago,
        complaint=(complaint,),
        consultation=consultation,
        recipients=(Recipient(SAMPLESHIRE_OOH),),
        consent=Consent(days=14),
        discriminator=("162397003", "Pain in throat"),
        pathways=PathwaysRecord(
            condition="Sore throat",
            triages=(triage(NURSE_USER, "PA102", "Sore Throat and Hoarse Voice", lines, disposition, advice_line),),
        ),
        sections=sections,
    )


_SWALLOWING = "Tx227010"

SCENARIO = Scenario(
    name="repeat-caller",
    summary="Third call in two days about a worsening sore throat; the newest document (not the last) is mapped",
    exercises="repeat-caller document set: three ClinicalDocuments with different effectiveTimes and dispositions, "
    "the newest in the middle of the payloads",
    interaction=REPEAT_CALLER_SET,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XOH401"), ("dos", "9004401")),
    reports=(
        _sore_throat_report(
            26 * 60 + 15,
            DX09,
            "Sore throat for four days.",
            ("Sore throat, mild temperature, eating and drinking normally.",),
            (yes_no(_SWALLOWING, "Is it hard to swallow saliva?", False, "Swallowing saliva was not a problem."),),
            advice("CX2701", "Sore throat", "Paracetamol or ibuprofen can help the pain.", *WORSENING.items),
        ),
        _sore_throat_report(
            45,
            DX05,
            "Sore throat much worse, now struggling to swallow and voice sounds muffled.",
            (
                "Third call in two days. Pain now mostly on the right, can only swallow sips.",
                "Voice muffled, temperature 39.1 C. No noisy breathing.",
            ),
            (
                yes_no(
                    _SWALLOWING, "Is it hard to swallow saliva?", True, "Difficulty swallowing saliva was described."
                ),
                yes_no("Tx227014", "Is the breathing noisy?", False, "Noisy breathing was not described."),
            ),
            advice("CX2703", "Sore throat, worsening", "Keep taking sips of water.", *WORSENING.items),
            (
                Section(
                    "Repeat Caller",
                    ("This is the third call to 111 about this problem in the last 48 hours.",),
                ),
            ),
        ),
        _sore_throat_report(
            5 * 60 + 30,
            DX06,
            "Sore throat still bad, now feverish.",
            ("Second call. Temperature 38.4 C, swallowing painful but managing food.",),
            (yes_no(_SWALLOWING, "Is it hard to swallow saliva?", False, "Swallowing saliva was not a problem."),),
            advice("CX2702", "Fever", "Keep cool and drink plenty of fluids.", *WORSENING.items),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
