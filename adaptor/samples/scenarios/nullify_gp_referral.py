"""Sample nullification ``nullify-gp-referral``: the GP referral of ``gp-referral`` withdrawn by the 111 service."""

from __future__ import annotations

from adaptor.samples.model import Nullification
from adaptor.samples.scenarios.parties import NULLIFY_111, SAMPLESHIRE_LEAD

NULLIFICATION = Nullification(
    name="nullify-gp-referral",
    summary="The 111 clinical lead withdraws the GP referral of gp-referral: it was written on the wrong patient's "
    "record",
    exercises="nullification (111 v2 interaction, nullificationDocument-v5-0 profile) paired with gp-referral: "
    "parentDocument id, setId and version of that document, reason 02, same recipients and sender",
    withdraws="gp-referral",
    interaction=NULLIFY_111,
    author=SAMPLESHIRE_LEAD,
    reason=("02", "Sent to wrong patient record"),
    reason_text="Sent to wrong patient record: the call was about another patient of the same practice.",
    minutes_later=12,
)
