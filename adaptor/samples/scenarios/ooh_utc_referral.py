"""Sample scenario ``ooh-utc-referral``: an out-of-hours referral to an urgent treatment centre, slot booked."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Appointment,
    Consent,
    Guardian,
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
    NURSE_ADVISER,
    NURSE_USER,
    OOH,
    SAMPLESHIRE_111,
    SAMPLESHIRE_111_USERNAME,
    TESTBURY_LANE_PRACTICE,
    TESTBURY_UTC,
    tel,
)
from adaptor.samples.scenarios.triage import DX06, WORSENING, advice, ask, triage, yes_no

PATIENT = Patient(
    name=Name(("Poppy",), "Mockley"),
    gender="2",
    age=(6, 88),
    local_id="SYN-P-0003",
    nhs_number="9991000151",
    address=Address(("7 Lantern Lane",), "Testbury", "XT2 8LL"),
    telecoms=(tel("01632960033", "H"),),
    gp=TESTBURY_LANE_PRACTICE,
    guardian=Guardian(
        name=Name(("Hannah",), "Mockley"),
        address=Address(("7 Lantern Lane",), "Testbury", "XT2 8LL"),
        telecoms=(tel("07700900033", "MC"),),
    ),
)

SCENARIO = Scenario(
    name="ooh-utc-referral",
    summary="Child with earache and fever; contact within 6 hours, arrival slot booked at an urgent treatment centre",
    exercises="out-of-hours primary interaction, booked appointment (Appointment and its Location), call-back "
    "(CALLBCK) participant with a time window, guardian, mother as informant",
    interaction=OOH,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XUT301"), ("dos", "9003301")),
    reports=(
        Report(
            patient=PATIENT,
            authors=(NURSE_ADVISER,),
            custodian=SAMPLESHIRE_111,
            disposition=DX06,
            complaint=("Earache in the left ear since teatime, hot to touch.",),
            consultation=(
                "Mother calling. Left earache for six hours, temperature 38.6 C, last paracetamol at 17:00.",
                "Eating and drinking a little, passing urine normally. No rash, no neck stiffness.",
                "No discharge from the ear.",
            ),
            recipients=(Recipient(TESTBURY_UTC),),
            participants=(
                Participant(
                    "CALLBCK",
                    name=Name(text="UTC Clinical Navigator"),
                    organisation=TESTBURY_UTC,
                    telecoms=(tel("01632960302"),),
                    role=("01", "Call Centre"),
                    window=(0, 120),
                ),
            ),
            informants=(RelatedInformant(Name(("Hannah",), "Mockley"), ("12", "Mother"), (tel("07700900033", "MC"),)),),
            consent=Consent(days=14),
            appointment=Appointment(
                in_minutes=95,
                place=TESTBURY_UTC,
                description="Arrival slot at the Urgent Treatment Centre; bring the child's red book.",
            ),
            discriminator=("16001004", "Otalgia"),
            pathways=PathwaysRecord(
                condition="Earache and fever",
                caller_is_patient=False,
                triages=(
                    triage(
                        NURSE_USER,
                        "PA74",
                        "Earache",
                        (
                            yes_no(
                                "Tx223100",
                                "Is there a new rash that does not fade when pressed?",
                                False,
                                "There was no rash that did not fade when pressed.",
                            ),
                            yes_no(
                                "Tx223112",
                                "Is there any discharge from the ear?",
                                False,
                                "There was no discharge from the ear.",
                            ),
                            ask(
                                "Tx223118",
                                "How bad is the pain?",
                                ("mild", "moderate", "severe"),
                                1,
                                "The pain was moderate.",
                            ),
                        ),
                        DX06,
                        advice(
                            "CX2301",
                            "Earache, child",
                            "Give children's paracetamol or ibuprofen as the leaflet says to ease the pain.",
                            "Offer regular drinks.",
                            *WORSENING.items,
                        ),
                    ),
                ),
            ),
        ),
    ),
    username=SAMPLESHIRE_111_USERNAME,
)
