"""Sample scenario ``safeguarding-referral``: a safeguarding referral (IUC v3 interaction and profile)."""

from __future__ import annotations

from adaptor.samples.model import (
    Address,
    Guardian,
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
    DEMOFORD_SURGERY,
    GP_IUC,
    IUC_PROFILE,
    SAMPLESHIRE_CHILDRENS_SERVICES,
    TESTVALE_CLINICIAN,
    TESTVALE_CLINICIAN_USER,
    TESTVALE_GP,
    TESTVALE_IUC,
    TESTVALE_IUC_USERNAME,
    tel,
)
from adaptor.samples.scenarios.triage import DX05, advice, ask, triage, yes_no

SCENARIO = Scenario(
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
                telecoms=(tel("01632960066", "H"),),
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
                RelatedInformant(Name(("Jordan",), "Fosterby"), ("06", "Foster parent"), (tel("07700900066", "MC"),)),
            ),
            responsible_party=TESTVALE_GP,
            discriminator=("125666000", "Burn"),
            pathways=PathwaysRecord(
                condition="Burn to forearm, looked-after child",
                caller_is_patient=False,
                triages=(
                    triage(
                        TESTVALE_CLINICIAN_USER,
                        "PA170",
                        "Burns and Scalds",
                        (
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
                        ),
                        DX05,
                        advice(
                            "CX2601",
                            "Burns",
                            "Cool the burn under cool running water for 20 minutes if not already done.",
                            "Cover loosely with cling film; do not burst any blisters.",
                        ),
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
    username=TESTVALE_IUC_USERNAME,
)
