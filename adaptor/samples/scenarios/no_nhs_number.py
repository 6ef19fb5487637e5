"""Sample scenario ``no-nhs-number``: a patient without an NHS number or GP practice."""

from __future__ import annotations

from adaptor.samples.model import Address, Consent, Name, PathwaysRecord, Patient, Recipient, Report, Scenario, Section
from adaptor.samples.scenarios.parties import (
    NURSE_ADVISER,
    NURSE_USER,
    OOH,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    SAMPLESHIRE_OOH,
    tel,
)
from adaptor.samples.scenarios.triage import DX11, WORSENING, advice, triage, yes_no

SCENARIO = Scenario(
    name="no-nhs-number",
    summary="Visitor from abroad without an NHS number or GP has run out of an asthma inhaler",
    exercises="patient without NHS number (local id only) and without GP practice, temporary address, preferred "
    "language other than English",
    interaction=OOH,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XOH401"), ("dos", "9004401")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Hugo",), "Exemple"),
                gender="1",
                age=(31, 5),
                local_id="SYN-P-0008",
                nhs_number=None,
                address=Address(("Room 12, The Placeholder Hotel", "3 Harbour Road"), "Testbury", "XT2 1PH", "TMP"),
                telecoms=(tel("07700900088", "MC"),),
                language="fr",
            ),
            authors=(NURSE_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX11,
            complaint=("Run out of blue inhaler, a bit wheezy tonight.",),
            consultation=(
                "Visitor to the UK for two weeks, asthma since childhood, uses salbutamol two or three times a week.",
                "Mild wheeze, can speak in full sentences, no blue lips.",
            ),
            recipients=(Recipient(SAMPLESHIRE_OOH),),
            consent=Consent(days=7),
            discriminator=("195967001", "Asthma"),
            pathways=PathwaysRecord(
                condition="Asthma, run out of inhaler",
                triages=(
                    triage(
                        NURSE_USER,
                        "PA9",
                        "Breathing Problems, Wheeze",
                        (
                            yes_no(
                                "Tx228003",
                                "Is it too hard to speak in full sentences?",
                                False,
                                "Speaking in full sentences was possible.",
                            ),
                            yes_no(
                                "Tx228011",
                                "Has the usual reliever inhaler run out?",
                                True,
                                "The usual reliever inhaler had run out.",
                            ),
                        ),
                        DX11,
                        advice(
                            "CX2801",
                            "Asthma",
                            "Sit upright and try to stay calm.",
                            "Bring your passport or other identification when you are seen.",
                            *WORSENING.items,
                        ),
                    ),
                ),
            ),
            sections=(
                Section(
                    "Special Patient Notes",
                    (
                        "Visitor to the UK; not registered with a GP; no NHS number found.",
                        "Prefers French; managed the call in English.",
                    ),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
