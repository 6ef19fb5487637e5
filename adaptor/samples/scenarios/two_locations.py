"""Sample scenario ``two-locations``: a GP practice with two locations (main surgery and branch)."""

from __future__ import annotations

from adaptor.samples.model import Address, Consent, Name, PathwaysRecord, Patient, Recipient, Report, Scenario
from adaptor.samples.scenarios.parties import (
    GP,
    HA_USER,
    HEALTH_ADVISER,
    MOCKFORD_BRANCH,
    MOCKFORD_MAIN,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX09, advice, triage, yes_no

SCENARIO = Scenario(
    name="two-locations",
    summary="Persistent rash; non-urgent appointment at a practice that has a main surgery and a branch",
    exercises="two ODS codes and two DoS ids in the address list, two primary recipients (two HealthcareServices), "
    "GP branch that is part of the main practice (Organization.partOf)",
    interaction=GP,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XGP501"), ("ods", "XGP502"), ("dos", "9005501"), ("dos", "9005502")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Grace",), "Sampleby", "Mrs"),
                gender="2",
                age=(45, 300),
                local_id="SYN-P-0009",
                nhs_number="9991000577",
                address=Address(("2 Towpath Cottages",), "Mockford", "XM5 7TC"),
                telecoms=(tel("01632960099", "H"), tel("07700900099", "MC")),
                gp=MOCKFORD_BRANCH,
                marital_status="D",
            ),
            authors=(HEALTH_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX09,
            complaint=("Itchy rash on both arms for ten days.",),
            consultation=(
                "Itchy red rash on both forearms for ten days, not spreading, fades when pressed.",
                "Feels well otherwise, no fever. Tried moisturiser without improvement.",
            ),
            recipients=(Recipient(MOCKFORD_MAIN), Recipient(MOCKFORD_BRANCH)),
            consent=Consent(days=14),
            discriminator=("271807003", "Eruption of skin"),
            pathways=PathwaysRecord(
                condition="Itchy rash on both arms",
                triages=(
                    triage(
                        HA_USER,
                        "PA140",
                        "Rash, Itch",
                        (
                            yes_no(
                                "Tx229001",
                                "Does the rash fade when a glass is pressed on it?",
                                True,
                                "The rash faded when pressed.",
                            ),
                            yes_no("Tx229007", "Is there a fever?", False, "No fever was described."),
                        ),
                        DX09,
                        advice(
                            "CX2901",
                            "Rash",
                            "Use an unperfumed moisturiser and avoid hot showers.",
                            "Contact either surgery of your practice for a routine appointment.",
                        ),
                    ),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
