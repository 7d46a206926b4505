"""Presenters: services return data (dataclasses, ``idcs_core.types``); these modules turn it into
the contract's answers (API.md field names, in the contract's order) and add the billing dialect's
answer aliases, which are all declared in ``idcs_core/aliases.py``. One module per area; the
profile-specific reshaping of a billing module's answers stays in ``api/dialects.py``."""
