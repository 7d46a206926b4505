"""OpenIDCS engine plugin for LXD and Incus."""
