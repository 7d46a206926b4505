"""Testing tools shipped with idcs-core: a live server, an API client, databases, and the
engine conformance kit (``idcs_core.testing.kit``). Engine plugins import these in their
own tests; see docs/writing-an-engine.md."""
