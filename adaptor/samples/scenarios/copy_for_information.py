"""Sample scenario ``copy-for-information``: a copy for information to the patient's GP, replacing an earlier one."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Consent,
    Name,
    PathwaysRecord,
    Patient,
    Recipient,
    Report,
    Scenario,
    Section,
    Telecom,
)
from adaptor.samples.scenarios.parties import (
    COPY,
    DEMOFORD_SURGERY,
    HA_USER,
    HEALTH_ADVISER,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX75, advice, ask, triage, yes_no

SCENARIO = Scenario(
    name="copy-for-information",
    summary="Cough for three weeks; patient told to contact own GP, practice sent a corrected copy for information",
    exercises="copy interaction (discharge-details-1, Encounter type 'Copy for Information'), version 2 document "
    "replacing an earlier one (Composition.relatesTo), care advice",
    interaction=COPY,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XGP601"), ("dos", "9006601")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Arthur",), "Placeholder", "Mr"),
                gender="1",
                age=(58, 201),
                local_id="SYN-P-0004",
                nhs_number="9991000224",
                address=Address(("Ivy Cottage", "Back Lane"), "Demoford", "XD6 2BL"),
                telecoms=(tel("01632960044", "H"), Telecom("mailto:arthur.placeholder@example.invalid", "H")),
                gp=DEMOFORD_SURGERY,
                marital_status="M",
            ),
            authors=(HEALTH_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX75,
            version=2,
            replaces_earlier=True,
            complaint=("Cough for three weeks that is not getting better.",),
            consultation=(
                "Dry cough for three weeks, no blood. Ex-smoker, stopped ten years ago.",
                "No breathlessness at rest, no chest pain, eating normally, no weight loss noticed.",
            ),
            recipients=(Recipient(DEMOFORD_SURGERY),),
            consent=Consent(days=28),
            discriminator=("49727002", "Cough"),
            pathways=PathwaysRecord(
                condition="Cough for three weeks",
                triages=(
                    triage(
                        HA_USER,
                        "PA35",
                        "Cough",
                        (
                            yes_no(
                                "Tx224001",
                                "Is there any blood in the phlegm?",
                                False,
                                "There was no blood in the phlegm.",
                            ),
                            ask(
                                "Tx224009",
                                "How long has the cough been there?",
                                ("less than 3 weeks", "3 weeks or more"),
                                1,
                                "The cough had been present for 3 weeks or more.",
                            ),
                        ),
                        DX75,
                        advice(
                            "CX2401",
                            "Cough",
                            "Call your GP practice within the next 3 working days for an appointment.",
                            "Honey and lemon in warm water can soothe a cough.",
                        ),
                    ),
                ),
            ),
            sections=(
                Section(
                    "Amendment",
                    ("This copy replaces the one sent earlier today, which was missing the current medication.",),
                ),
                Section("Current Medication", ("Ramipril 5 mg once a day.", "Atorvastatin 20 mg at night.")),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
