"""OpenIDCS engine for QEMU/KVM virtual machines through libvirt (engine type ``QEMU``)."""
