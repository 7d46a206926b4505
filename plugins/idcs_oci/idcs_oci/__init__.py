"""OpenIDCS engine for Docker / Podman hosts (engine type ``OCInterface``).

The entry point ``idcs.engines: OCInterface = idcs_oci.engine:OCIEngine`` makes the
core load :class:`idcs_oci.engine.OCIEngine`; ``idcs_oci.testing`` starts a throw-away
Docker daemon for tests (this package's own and the core's conformance kit).
"""

__version__ = "0.1.0"
