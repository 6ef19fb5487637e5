"""Sample scenario ``ambulance-callout-copy``: the copy of an ambulance call-out sent to the patient's GP."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Consent,
    IncidentLocation,
    Name,
    PathwaysRecord,
    Patient,
    Recipient,
    RelatedInformant,
    Report,
    Scenario,
    Section,
)
from adaptor.samples.scenarios.parties import (
    COPY,
    EXAMPLETON_HEALTH_CENTRE,
    PARAMEDIC_ADVISER,
    PARAMEDIC_USER,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX012, advice, triage, yes_no

SCENARIO = Scenario(
    name="ambulance-callout-copy",
    summary="Fall at home, unable to get up with hip pain; category 3 ambulance sent, GP informed",
    exercises="copy interaction for an ambulance dispatch (ODS address only), incident location with directions, "
    "carer as informant, ambulance dispatch section",
    interaction=COPY,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XGP101"),),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Dorothy",), "Mockridge", "Mrs"),
                gender="2",
                age=(91, 12),
                local_id="SYN-P-0005",
                nhs_number="9991000291",
                address=Address(("Flat 1, Rowan Court", "22 Beech Avenue"), "Exampleton", "XS1 6RC"),
                telecoms=(tel("01632960055", "H"),),
                gp=EXAMPLETON_HEALTH_CENTRE,
                marital_status="W",
            ),
            authors=(PARAMEDIC_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX012,
            complaint=("Fallen in the kitchen, cannot get up, pain in the right hip.",),
            consultation=(
                "Carer found her on the kitchen floor at 08:40; she thinks she fell about an hour earlier.",
                "Alert and talking, did not hit her head, not on blood thinners.",
                "Right hip painful, leg looks shorter and turned out. Not able to stand.",
            ),
            recipients=(Recipient(EXAMPLETON_HEALTH_CENTRE),),
            informants=(
                RelatedInformant(
                    Name(("Lee",), "Carerson"),
                    ("20", "Carer"),
                    (tel("07700900055", "MC"),),
                    Address(("4 Birch Road",), "Exampleton", "XS1 6BR"),
                ),
            ),
            incident_location=IncidentLocation(
                Address(
                    ("Flat 1, Rowan Court", "22 Beech Avenue"),
                    "Exampleton",
                    "XS1 6RC",
                    "PHYS",
                    directions="Ground floor flat, entrance at the side of the building; the carer will meet the crew.",
                )
            ),
            consent=Consent(days=7),
            discriminator=("1912002", "Fall"),
            pathways=PathwaysRecord(
                condition="Fall, unable to get up, hip pain",
                caller_is_patient=False,
                triages=(
                    triage(
                        PARAMEDIC_USER,
                        "PA60",
                        "Falls",
                        (
                            yes_no(
                                "Tx225004",
                                "Did she hit her head or lose consciousness?",
                                False,
                                "No head injury or loss of consciousness was described.",
                            ),
                            yes_no(
                                "Tx225010",
                                "Can she get up off the floor, with help if needed?",
                                False,
                                "The individual was unable to get up off the floor.",
                            ),
                            yes_no(
                                "Tx225016",
                                "Is one leg shorter or turned out?",
                                True,
                                "A shortened or turned-out leg was described.",
                            ),
                        ),
                        DX012,
                        advice(
                            "CX2501",
                            "Waiting for an ambulance",
                            "Do not try to move her; keep her warm with a blanket.",
                            "Do not give her anything to eat or drink.",
                            "Put away any pets and leave a light on outside.",
                        ),
                    ),
                ),
            ),
            sections=(
                Section(
                    "Ambulance Dispatch",
                    (
                        "Ambulance requested by 111 for a category 3 response.",
                        "Sampleshire Ambulance Service incident reference SYN-AMB-000417.",
                        "GP practice informed by this copy; no action needed unless the patient is not conveyed.",
                    ),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
