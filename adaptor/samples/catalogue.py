"""The sample scenarios: one synthetic NHS 111 message per situation a receiver has to handle.

Every person, organisation, number and story here is invented. Patients carry NHS numbers from the test range
(999 000 0000 - 999 999 9999, with a valid check digit) or none; organisations have made-up ODS codes (``X...``)
and Directory of Services ids (``900...``); telephone numbers come from Ofcom's ranges reserved for drama
(01632 960xxx, 07700 900xxx); places are in the fictional county of Sampleshire.

The clinical content follows how NHS Pathways triage reads (reason for contact, pathway, questions, disposition,
care advice), with dispositions, symptoms and advice that differ from one scenario to the next.
"""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Appointment,
    CareAdvice,
    Clinician,
    Consent,
    Disposition,
    Guardian,
    IncidentLocation,
    Name,
    Organisation,
    Participant,
    PathwaysRecord,
    PathwaysUser,
    Patient,
    ProfessionalInformant,
    Question,
    Recipient,
    RelatedInformant,
    Report,
    Scenario,
    Section,
    Telecom,
    Triage,
    TriageLine,
)

# == interactions and profiles (wire-contract.md §3) ==========================================================

GP = "urn:nhs-itk:interaction:primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0"
ED = "urn:nhs-itk:interaction:primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0"
OOH = "urn:nhs-itk:interaction:primaryOutofHourRecipientNHS111CDADocument-v2-0"
COPY = "urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v2-0"
REPEAT_CALLER_SET = "urn:nhs-itk:interaction:primaryNHS111RepeatCallerDocumentSet-v1-0"
GP_IUC = "urn:nhs-itk:interaction:primaryGeneralPractitionerRecipientIntegratedUrgentCareCDADocument-v3-0"
IUC_PROFILE = "urn:nhs-en:profile:IntegratedUrgentCareCDADocument-v3-1"

# == Pathways dispositions ====================================================================================

DX02 = Disposition("Dx02", "Attend Emergency Treatment Centre within 1 hour")
DX03 = Disposition("Dx03", "Attend Emergency Treatment Centre within 4 hours")
DX05 = Disposition("Dx05", "To contact a Primary Care Service within 2 hours")
DX06 = Disposition("Dx06", "To contact a Primary Care Service within 6 hours")
DX09 = Disposition(
    "Dx09", "For persistent or recurrent symptoms: get in touch with a local service for a Non-Urgent Appointment"
)
DX11 = Disposition("Dx11", "Speak to a Primary Care Service within 1 hour")
DX012 = Disposition("Dx012", "Emergency Ambulance Response (Category 3)")
DX32 = Disposition("Dx32", "Speak to a Clinician from our service Immediately")
DX75 = Disposition("Dx75", "MUST contact own GP Practice within 3 working days")

# == organisations ============================================================================================

GP_PRACTICE = ("001", "GP Practice")


def _tel(number: str, use: str = "WP") -> Telecom:
    return Telecom(f"tel:{number}", use)


SAMPLESHIRE_111 = Organisation(
    "X1S01",
    "Sampleshire NHS 111",
    Address(("Unit 4", "Exampleton Business Park"), "Exampleton", "XS1 4AB", "WP"),
    (_tel("01632960100"),),
)
TESTVALE_IUC = Organisation(
    "X1T02",
    "Testvale Integrated Urgent Care",
    Address(("Testvale House", "1 Placeholder Road"), "Testbury", "XT2 9ZZ", "WP"),
    (_tel("01632960200"),),
)

EXAMPLETON_HEALTH_CENTRE = Organisation(
    "XGP101",
    "Exampleton Health Centre",
    Address(("Exampleton Health Centre", "2 Market Street"), "Exampleton", "XS1 2HC", "WP"),
    (_tel("01632960101"),),
    kind=GP_PRACTICE,
    dos_id="9001101",
)
SAMPLETON_ED = Organisation(
    "XED201",
    "Sampleton General Hospital Emergency Department",
    Address(("Sampleton General Hospital", "Infirmary Way"), "Sampleton", "XS3 1ED", "WP"),
    (_tel("01632960201"),),
    dos_id="9002201",
)
TESTBURY_UTC = Organisation(
    "XUT301",
    "Testbury Urgent Treatment Centre",
    Address(("Testbury Community Hospital", "Mill Lane"), "Testbury", "XT2 3UT", "WP"),
    (_tel("01632960301"),),
    dos_id="9003301",
)
SAMPLESHIRE_OOH = Organisation(
    "XOH401",
    "Sampleshire GP Out of Hours Service",
    Address(("Sampleshire Urgent Care Hub", "5 Station Approach"), "Sampleton", "XS3 4OH", "WP"),
    (_tel("01632960401"),),
    dos_id="9004401",
)
MOCKFORD_MAIN = Organisation(
    "XGP501",
    "Mockford Medical Group, Main Surgery",
    Address(("Mockford Medical Group", "10 High Street"), "Mockford", "XM5 1MG", "WP"),
    (_tel("01632960501"),),
    kind=GP_PRACTICE,
    dos_id="9005501",
)
MOCKFORD_BRANCH = Organisation(
    "XGP502",
    "Mockford Medical Group, Riverside Branch Surgery",
    Address(("Riverside Branch Surgery", "3 Towpath Walk"), "Mockford", "XM5 7RB", "WP"),
    (_tel("01632960502"),),
    kind=GP_PRACTICE,
    dos_id="9005502",
    part_of=MOCKFORD_MAIN,
)
DEMOFORD_SURGERY = Organisation(
    "XGP601",
    "Demoford Surgery",
    Address(("Demoford Surgery", "Church Road"), "Demoford", "XD6 1DS", "WP"),
    (_tel("01632960601"),),
    kind=GP_PRACTICE,
    dos_id="9006601",
)
TESTBURY_LANE_PRACTICE = Organisation(
    "XGP701",
    "Testbury Lane Practice",
    Address(("Testbury Lane Practice", "44 Testbury Lane"), "Testbury", "XT2 7LP", "WP"),
    (_tel("01632960701"),),
    kind=GP_PRACTICE,
    dos_id="9007701",
)
SAMPLESHIRE_CHILDRENS_SERVICES = Organisation(
    "XLA901",
    "Sampleshire County Council Children's Services",
    Address(("County Hall", "Sample Square"), "Sampleton", "XS3 9CC", "WP"),
    (_tel("01632960901"),),
)

# == 111 staff ================================================================================================

CLINICAL_ROLE = ("R8000", "Clinical Practitioner Access Role")
HEALTH_PROFESSIONAL_ROLE = ("R8003", "Health Professional Access Role")
ADVISOR_ROLE = ("R8008", "Admin/Clinical Support Access Role")
MEDICAL_DIRECTOR_ROLE = ("R0010", "Medical Director")

NURSE_ADVISER = Clinician(Name(("Jamie",), "Fictional"), "SYN-CA-0101", CLINICAL_ROLE, SAMPLESHIRE_111)
PARAMEDIC_ADVISER = Clinician(Name(("Morgan",), "Madeup"), "SYN-CA-0102", CLINICAL_ROLE, SAMPLESHIRE_111)
HEALTH_ADVISER = Clinician(Name(("Robin",), "Placeholder"), "SYN-HA-0201", ADVISOR_ROLE, SAMPLESHIRE_111)
SAMPLESHIRE_LEAD = Clinician(
    Name(("Alex",), "Notreal", "Dr"), "SYN-MD-0001", MEDICAL_DIRECTOR_ROLE, SAMPLESHIRE_111, (_tel("01632960199"),)
)
TESTVALE_CLINICIAN = Clinician(Name(("Casey",), "Imaginary"), "SYN-CA-0301", CLINICAL_ROLE, TESTVALE_IUC)
TESTVALE_ADVISER = Clinician(Name(("Riley",), "Pretend"), "SYN-HA-0302", ADVISOR_ROLE, TESTVALE_IUC)
TESTVALE_GP = Clinician(Name(("Sasha",), "Hypothetical", "Dr"), "SYN-GP-0303", HEALTH_PROFESSIONAL_ROLE, TESTVALE_IUC)

HA_USER = PathwaysUser("SYN0201", "PLACEHOLDER, Robin", "T1")
NURSE_USER = PathwaysUser("SYN0101", "FICTIONAL, Jamie", "T3")
PARAMEDIC_USER = PathwaysUser("SYN0102", "MADEUP, Morgan", "T3")
TESTVALE_HA_USER = PathwaysUser("SYN0302", "PRETEND, Riley", "T1")
TESTVALE_CLINICIAN_USER = PathwaysUser("SYN0301", "IMAGINARY, Casey", "T3")
TESTVALE_GP_USER = PathwaysUser("SYN0303", "HYPOTHETICAL, Sasha", "T4")

# == Pathways triage building blocks ==========================================================================


def ask(question_id: str, text: str, answers: tuple[str, ...], chosen: int, report: str) -> TriageLine:
    """A question asked during triage, with every answer offered and the one chosen."""
    return TriageLine("SingleAnswer", report, Question(question_id, text, answers, chosen))


def reason_for_contact(report: str = "An injury or health problem was the reason for the contact.") -> TriageLine:
    return ask(
        "Tx220109",
        "What is the reason for the contact?",
        (
            "an injury or other health problem",
            "a need to access another healthcare service",
            "a healthcare professional requesting contact with another clinician",
            "a report of results or tests",
            "more",
        ),
        0,
        report,
    )


def pathway(name: str) -> TriageLine:
    return TriageLine("PathwaysSelection", f"Pathway selected - {name}")


def yes_no(question_id: str, text: str, yes: bool, report: str) -> TriageLine:
    return ask(question_id, text, ("Yes", "No", "I don't know"), 0 if yes else 1, report)


def reached(disposition: Disposition) -> TriageLine:
    return TriageLine("Disposition", f"Disposition reached: {disposition.text} ({disposition.code})")


def advice(advice_id: str, topic: str, *items: str) -> TriageLine:
    return TriageLine("HomeCareAdvice", "", care_advice=(CareAdvice(advice_id, topic, items),), positive=False)


WORSENING = CareAdvice(
    "CX1001",
    "Worsening",
    (
        "If there are any new symptoms, or if the condition gets worse, changes or you have any other concerns, "
        "call us back.",
    ),
)

# == 1. referral to GP for action =============================================================================

_ELDERLY_PATIENT = Patient(
    name=Name(("Margaret", "Ada"), "Testwell", "Mrs"),
    gender="2",
    age=(84, 37),
    local_id="SYN-P-0001",
    nhs_number="9991000011",
    address=Address(("12 Willow Close", "Exampleton Green"), "Exampleton", "XS1 5WC"),
    telecoms=(_tel("01632960011", "H"), _tel("07700900011", "EC")),
    gp=EXAMPLETON_HEALTH_CENTRE,
    marital_status="W",
    ethnic_group=("A", "White - British"),
)

GP_REFERRAL = Scenario(
    name="gp-referral",
    summary="District nurse calls about new confusion and a suspected urine infection; GP to act within 2 hours",
    exercises="GP primary interaction (DoS id listed before ODS code), professional informant, emergency contact, "
    "consent and Permission to View, responsible party, care advice, ethnic group and marital status",
    interaction=GP,
    sender=SAMPLESHIRE_111,
    addresses=(("dos", "9001101"), ("ods", "XGP101")),
    reports=(
        Report(
            patient=_ELDERLY_PATIENT,
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
                        (_tel("07700900501", "MC"),),
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
                    Triage(
                        NURSE_USER,
                        "PA1210",
                        (
                            reason_for_contact(),
                            pathway("Confusion"),
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
                            reached(DX05),
                            advice(
                                "CX2101",
                                "Confusion",
                                "Stay with her or make sure someone checks on her regularly until she has been seen.",
                                "Offer small, frequent drinks of water.",
                                *WORSENING.items,
                            ),
                        ),
                        DX05,
                        DX05,
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
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 2. referral to the emergency department ==================================================================

ED_REFERRAL = Scenario(
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
                telecoms=(_tel("07700900022", "MC"),),
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
                RelatedInformant(Name(("Chloe",), "Sampleford"), ("01", "Spouse"), (_tel("07700900023", "MC"),)),
            ),
            data_enterer=HEALTH_ADVISER,
            responsible_party=SAMPLESHIRE_LEAD,
            consent=Consent(days=7),
            discriminator=("21522001", "Abdominal pain"),
            pathways=PathwaysRecord(
                condition="Abdominal pain, lower right",
                caller_is_patient=False,
                triages=(
                    Triage(
                        PARAMEDIC_USER,
                        "PA2",
                        (
                            reason_for_contact(),
                            pathway("Abdominal Pain"),
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
                            reached(DX02),
                            advice(
                                "CX2201",
                                "Abdominal pain",
                                "Do not eat or drink anything until you have been seen, in case an operation is "
                                "needed.",
                                "Take a list of your medicines with you.",
                            ),
                        ),
                        DX02,
                        DX02,
                    ),
                ),
            ),
        ),
    ),
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 3. referral to an urgent treatment centre (out of hours), with a booked appointment =======================

_CHILD_WITH_EARACHE = Patient(
    name=Name(("Poppy",), "Mockley"),
    gender="2",
    age=(6, 88),
    local_id="SYN-P-0003",
    nhs_number="9991000151",
    address=Address(("7 Lantern Lane",), "Testbury", "XT2 8LL"),
    telecoms=(_tel("01632960033", "H"),),
    gp=TESTBURY_LANE_PRACTICE,
    guardian=Guardian(
        name=Name(("Hannah",), "Mockley"),
        address=Address(("7 Lantern Lane",), "Testbury", "XT2 8LL"),
        telecoms=(_tel("07700900033", "MC"),),
    ),
)

OOH_REFERRAL = Scenario(
    name="ooh-utc-referral",
    summary="Child with earache and fever; contact within 6 hours, arrival slot booked at an urgent treatment centre",
    exercises="out-of-hours primary interaction, booked appointment (Appointment and its Location), call-back "
    "(CALLBCK) participant with a time window, guardian, mother as informant",
    interaction=OOH,
    sender=SAMPLESHIRE_111,
    addresses=(("ods", "XUT301"), ("dos", "9003301")),
    reports=(
        Report(
            patient=_CHILD_WITH_EARACHE,
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
                    telecoms=(_tel("01632960302"),),
                    role=("01", "Call Centre"),
                    window=(0, 120),
                ),
            ),
            informants=(
                RelatedInformant(Name(("Hannah",), "Mockley"), ("12", "Mother"), (_tel("07700900033", "MC"),)),
            ),
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
                    Triage(
                        NURSE_USER,
                        "PA74",
                        (
                            reason_for_contact(),
                            pathway("Earache"),
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
                            reached(DX06),
                            advice(
                                "CX2301",
                                "Earache, child",
                                "Give children's paracetamol or ibuprofen as the leaflet says to ease the pain.",
                                "Offer regular drinks.",
                                *WORSENING.items,
                            ),
                        ),
                        DX06,
                        DX06,
                    ),
                ),
            ),
        ),
    ),
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 4. copy for information to the patient's GP ==============================================================

COPY_FOR_INFORMATION = Scenario(
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
                telecoms=(_tel("01632960044", "H"), Telecom("mailto:arthur.placeholder@example.invalid", "H")),
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
                    Triage(
                        HA_USER,
                        "PA35",
                        (
                            reason_for_contact(),
                            pathway("Cough"),
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
                            reached(DX75),
                            advice(
                                "CX2401",
                                "Cough",
                                "Call your GP practice within the next 3 working days for an appointment.",
                                "Honey and lemon in warm water can soothe a cough.",
                            ),
                        ),
                        DX75,
                        DX75,
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
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 5. copy of an ambulance call-out =========================================================================

AMBULANCE_COPY = Scenario(
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
                telecoms=(_tel("01632960055", "H"),),
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
                    (_tel("07700900055", "MC"),),
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
                    Triage(
                        PARAMEDIC_USER,
                        "PA60",
                        (
                            reason_for_contact(),
                            pathway("Falls"),
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
                            reached(DX012),
                            advice(
                                "CX2501",
                                "Waiting for an ambulance",
                                "Do not try to move her; keep her warm with a blanket.",
                                "Do not give her anything to eat or drink.",
                                "Put away any pets and leave a light on outside.",
                            ),
                        ),
                        DX012,
                        DX012,
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
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 6. safeguarding referral =================================================================================

SAFEGUARDING_REFERRAL = Scenario(
    name="safeguarding-referral",
    summary="Burn on a looked-after toddler with a changing account; GP to see within 2 hours, safeguarding raised",
    exercises="IUC v3 interaction and profile, restricted confidentiality, guardian organisation (local authority), "
    "foster carer as informant, safeguarding concern section, no consent recorded",
    interaction=GP_IUC,
    sender=TESTVALE_IUC,
    addresses=(("dos", "9006601"), ("ods", "XGP601")),
    profile_id=IUC_PROFILE,
    reports=(
        Report(
            patient=Patient(
                name=Name(("Leo",), "Imaginary"),
                gender="1",
                age=(3, 150),
                local_id="SYN-P-0006",
                nhs_number="9991000364",
                address=Address(("29 Hawthorn Drive",), "Demoford", "XD6 4HD"),
                telecoms=(_tel("01632960066", "H"),),
                gp=DEMOFORD_SURGERY,
                guardian=Guardian(organisation=SAMPLESHIRE_CHILDRENS_SERVICES),
            ),
            authors=(TESTVALE_CLINICIAN,),
            custodian=TESTVALE_IUC,
            disposition=DX05,
            iuc_v3=True,
            confidentiality="R",
            complaint=("Red, blistered patch on the left forearm, about the size of a 50p coin.",),
            consultation=(
                "Foster carer calling. Burn noticed at bath time this evening; child unsettled when it is touched.",
                "First said to be from a radiator at a family contact visit, later said not to be known.",
                "No other injuries seen. Child alert, drinking and passing urine.",
            ),
            recipients=(Recipient(DEMOFORD_SURGERY),),
            informants=(
                RelatedInformant(Name(("Jordan",), "Fosterby"), ("06", "Foster parent"), (_tel("07700900066", "MC"),)),
            ),
            responsible_party=TESTVALE_GP,
            discriminator=("125666000", "Burn"),
            pathways=PathwaysRecord(
                condition="Burn to forearm, looked-after child",
                caller_is_patient=False,
                triages=(
                    Triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA170",
                        (
                            reason_for_contact(),
                            pathway("Burns and Scalds"),
                            ask(
                                "Tx226002",
                                "How big is the burn?",
                                ("smaller than the palm of the child's hand", "larger than the palm of the hand"),
                                0,
                                "The burn was smaller than the palm of the child's hand.",
                            ),
                            yes_no(
                                "Tx226008",
                                "Is there a concern about how the injury happened?",
                                True,
                                "A concern about how the injury happened was described.",
                            ),
                            reached(DX05),
                            advice(
                                "CX2601",
                                "Burns",
                                "Cool the burn under cool running water for 20 minutes if not already done.",
                                "Cover loosely with cling film; do not burst any blisters.",
                            ),
                        ),
                        DX05,
                        DX05,
                    ),
                ),
            ),
            sections=(
                Section(
                    "Safeguarding Concern",
                    (
                        "Safeguarding concern raised by the 111 clinician: the account of the injury changed during "
                        "the call.",
                        "The child is looked after by Sampleshire County Council; the foster carer is with him.",
                        "Children's social care emergency duty team told by telephone, reference SYN-SG-2207.",
                        "Information shared without consent under the safeguarding duty.",
                    ),
                ),
            ),
        ),
    ),
    username="CN=x1t02.testvale-iuc.synthetic",
)

# == 7. repeat caller: several documents ======================================================================

_REPEAT_CALLER = Patient(
    name=Name(("Nadia",), "Testwood", "Ms"),
    gender="2",
    age=(34, 60),
    local_id="SYN-P-0007",
    nhs_number="9991000437",
    address=Address(("5 Quarry Hill",), "Sampleton", "XS3 5QH"),
    telecoms=(_tel("07700900077", "MC"),),
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
        patient=_REPEAT_CALLER,
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
            triages=(
                Triage(
                    NURSE_USER,
                    "PA102",
                    (
                        reason_for_contact(),
                        pathway("Sore Throat and Hoarse Voice"),
                        *lines,
                        reached(disposition),
                        advice_line,
                    ),
                    disposition,
                    disposition,
                ),
            ),
        ),
        sections=sections,
    )


_SWALLOWING = "Tx227010"

REPEAT_CALLER = Scenario(
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
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 8. patient without an NHS number =========================================================================

NO_NHS_NUMBER = Scenario(
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
                telecoms=(_tel("07700900088", "MC"),),
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
                    Triage(
                        NURSE_USER,
                        "PA9",
                        (
                            reason_for_contact(),
                            pathway("Breathing Problems, Wheeze"),
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
                            reached(DX11),
                            advice(
                                "CX2801",
                                "Asthma",
                                "Sit upright and try to stay calm.",
                                "Bring your passport or other identification when you are seen.",
                                *WORSENING.items,
                            ),
                        ),
                        DX11,
                        DX11,
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
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 9. practice with two locations ===========================================================================

TWO_LOCATIONS = Scenario(
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
                telecoms=(_tel("01632960099", "H"), _tel("07700900099", "MC")),
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
                    Triage(
                        HA_USER,
                        "PA140",
                        (
                            reason_for_contact(),
                            pathway("Rash, Itch"),
                            yes_no(
                                "Tx229001",
                                "Does the rash fade when a glass is pressed on it?",
                                True,
                                "The rash faded when pressed.",
                            ),
                            yes_no("Tx229007", "Is there a fever?", False, "No fever was described."),
                            reached(DX09),
                            advice(
                                "CX2901",
                                "Rash",
                                "Use an unperfumed moisturiser and avoid hot showers.",
                                "Contact either surgery of your practice for a routine appointment.",
                            ),
                        ),
                        DX09,
                        DX09,
                    ),
                ),
            ),
        ),
    ),
    username="CN=x1s01.sampleshire-111.synthetic",
)

# == 10. effectiveTime without an offset ======================================================================

NO_OFFSET = Scenario(
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
                telecoms=(_tel("07700900100", "MC"),),
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
                    Triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA145",
                        (
                            reason_for_contact(),
                            pathway("Wrist, Hand or Finger Injury"),
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
                            reached(DX03),
                            advice(
                                "CX3001",
                                "Wrist injury",
                                "Take off rings and watches from that hand.",
                                "Support the arm in a sling or on a pillow and use a cold pack wrapped in a towel.",
                            ),
                        ),
                        DX03,
                        DX03,
                    ),
                ),
            ),
        ),
    ),
    username="CN=x1t02.testvale-iuc.synthetic",
)

# == 11. Pathways record with several triages =================================================================

SEVERAL_TRIAGES = Scenario(
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
                telecoms=(_tel("01632960111", "H"), _tel("07700900111", "MC")),
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
                    Triage(
                        TESTVALE_HA_USER,
                        "PA88",
                        (
                            reason_for_contact(),
                            pathway("Headache"),
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
                            reached(DX32),
                            advice(
                                "CX3101",
                                "Waiting for a clinician",
                                "Stay by the phone: a clinician will call you back now.",
                            ),
                        ),
                        DX32,
                        DX32,
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
    username="CN=x1t02.testvale-iuc.synthetic",
)

#: Every scenario, in the order of the samples index.
SCENARIOS: tuple[Scenario, ...] = (
    GP_REFERRAL,
    ED_REFERRAL,
    OOH_REFERRAL,
    COPY_FOR_INFORMATION,
    AMBULANCE_COPY,
    SAFEGUARDING_REFERRAL,
    REPEAT_CALLER,
    NO_NHS_NUMBER,
    TWO_LOCATIONS,
    NO_OFFSET,
    SEVERAL_TRIAGES,
)
