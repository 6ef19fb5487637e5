"""The Pathways side of the sample scenarios: the dispositions they reach and the lines a triage is made of."""

from __future__ import annotations

from adaptor.samples.model import CareAdvice, Disposition, PathwaysUser, Question, Triage, TriageLine

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

# == triage lines =============================================================================================


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

# == a whole triage ===========================================================================================


def triage(
    user: PathwaysUser,
    pathway_id: str,
    pathway_name: str,
    questions: tuple[TriageLine, ...],
    disposition: Disposition,
    care_advice: TriageLine,
) -> Triage:
    """A triage as most calls have one: the reason for contact, the pathway chosen, its questions, the
    disposition reached and the care advice given; the disposition is both the initial and the final one.
    """
    lines = (reason_for_contact(), pathway(pathway_name), *questions, reached(disposition), care_advice)
    return Triage(user, pathway_id, lines, disposition, disposition)
