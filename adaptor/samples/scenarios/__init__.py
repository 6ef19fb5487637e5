"""The sample scenarios: one synthetic NHS 111 message per situation a receiver has to handle, a module each.

Every person, organisation, number and story here is invented. Patients carry NHS numbers from the test range
(999 000 0000 - 999 999 9999, with a valid check digit) or none; organisations have made-up ODS codes (``X...``)
and Directory of Services ids (``900...``); telephone numbers come from Ofcom's ranges reserved for drama
(01632 960xxx, 07700 900xxx); places are in the fictional county of Sampleshire.

The clinical content follows how NHS Pathways triage reads (reason for contact, pathway, questions, disposition,
care advice), with dispositions, symptoms and advice that differ from one scenario to the next.

* :mod:`.parties` holds the interactions, the organisations and the 111 staff the scenarios share;
* :mod:`.triage` the Pathways dispositions and the building blocks of a triage;
* every other module is one scenario, and :mod:`adaptor.samples.catalogue` puts them in the order of the index.
"""
