"""OpenIDCS engine for VMware ESXi hosts and vCenter servers (engine type ``vSphereESXi``)."""

__version__ = "0.1.0"
