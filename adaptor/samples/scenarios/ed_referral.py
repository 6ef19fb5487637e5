"""Sample scenario ``ed-referral``: a referral to an emergency department."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Consent,
    Name,
    Participant,
    PathwaysRecord,
    Patient,
    Recipient,
    RelatedInformant,
    Report,
    Scenario,
)
from adaptor.samples.scenarios.parties import (
    ED,
    HEALTH_ADVISER,
    PARAMEDIC_ADVISER,
    PARAMEDIC_USER,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    SAMPLESHIRE_LEAD,
    SAMPLETON_ED,
    TESTBURY_LANE_PRACTICE,
    tel,
)
from adaptor.samples.scenarios.triage import DX02, advice, ask, triage, yes_no

SCENARIO = Scenario(
    name="ed-referral",
    summary="Abdominal pain moving to the lower right side; attend ED within 1 hour",
    exercises="ED primary interaction, spouse as informant, data enterer, referral target (REFT) participant, "
    "a tracking (TRC) copy recipient, clinical discriminator",
    interaction=ED,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XED201"), ("dos", "9002201")),
    reports=(
        Report(
            patient=Patient(
                name=Name(("Oliver",), "Sampleford", "Mr"),
                gender="1",
                age=(27, 140),
                local_id="SYN-P-0002",
                nhs_number="9991000089",
                address=Address(("Flat 3", "18 Orchard Row"), "Testbury", "XT2 4OR"),
                telecoms=(tel("07700900022", "MC"),),
                gp=TESTBURY_LANE_PRACTICE,
                marital_status="M",
            ),
            authors=(PARAMEDIC_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX02,
            complaint=("Tummy pain since last night, now worse on the lower right side.",),
            consultation=(
                "Pain started around the belly button yesterday evening and has moved to the lower right.",
                "Pain worse on walking and coughing. Vomited twice. Temperature 37.9 C.",
                "No diarrhoea, no blood in vomit or stools. No previous abdominal surgery.",
            ),
            recipients=(Recipient(SAMPLETON_ED), Recipient(TESTBURY_LANE_PRACTICE, "TRC")),
            participants=(
                Participant(
                    "REFT",
                    organisation=SAMPLETON_ED,
                    address=SAMPLETON_ED.address,
                    telecoms=SAMPLETON_ED.telecoms,
                ),
            ),
            informants=(
                RelatedInformant(Name(("Chloe",), "Sampleford"), ("01", "Spouse"), (tel("07700900023", "MC"),)),
            ),
            data_enterer=HEALTH_ADVISER,
            responsible_party=SAMPLESHIRE_LEAD,
            consent=Consent(days=7),
            discriminator=("21522001", "Abdominal pain"),
            pathways=PathwaysRecord(
                condition="Abdominal pain, lower right",
                caller_is_patient=False,
                triages=(
                    triage(
                        PARAMEDIC_USER,
                        "PA2",
                        "Abdominal Pain",
                        (
                            ask(
                                "Tx222006",
                                "Where is the pain now?",
                                ("upper abdomen", "lower right side", "lower left side", "all over"),
                                1,
                                "The pain was in the lower right side of the abdomen.",
                            ),
                            yes_no(
                                "Tx222011",
                                "Is the pain worse on walking or coughing?",
                                True,
                                "The pain was made worse by walking or coughing.",
                            ),
                            yes_no(
                                "Tx222019",
                                "Has there been any vomiting?",
                                True,
                                "Vomiting was described.",
                            ),
                        ),
                        DX02,
                        advice(
                            "CX2201",
                            "Abdominal pain",
                            "Do not eat or drink anything until you have been seen, in case an operation is needed.",
                            "Take a list of your medicines with you.",
                        ),
                    ),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
