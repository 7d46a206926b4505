"""OpenIDCS engine for plain LXC hosts (engine type ``Containers``), locally or over SSH."""
