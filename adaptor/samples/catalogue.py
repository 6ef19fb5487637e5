"""The sample catalogue: every scenario of :mod:`adaptor.samples.scenarios`, in the order of the samples index.

A new scenario is a new module in that package (one ``SCENARIO`` each, or one ``NULLIFICATION`` for a message that
withdraws a scenario's document) and one line here.
"""

from __future__ import annotations

from adaptor.samples.model import Nullification, Scenario
from adaptor.samples.scenarios import (
    ambulance_callout_copy,
    copy_for_information,
    ed_referral,
    gp_referral,
    no_nhs_number,
    no_offset,
    nullify_gp_referral,
    ooh_utc_referral,
    repeat_caller,
    safeguarding_referral,
    several_triages,
    two_locations,
)

#: Every scenario, in the order of the samples index.
SCENARIOS: tuple[Scenario, ...] = (
    gp_referral.SCENARIO,
    ed_referral.SCENARIO,
    ooh_utc_referral.SCENARIO,
    copy_for_information.SCENARIO,
    ambulance_callout_copy.SCENARIO,
    safeguarding_referral.SCENARIO,
    repeat_caller.SCENARIO,
    no_nhs_number.SCENARIO,
    two_locations.SCENARIO,
    no_offset.SCENARIO,
    several_triages.SCENARIO,
)

#: Every nullification, each paired with the scenario in :data:`SCENARIOS` whose document it withdraws.
NULLIFICATIONS: tuple[Nullification, ...] = (nullify_gp_referral.NULLIFICATION,)
