"""idcs-vmware: the OpenIDCS engine for VMware Workstation Pro through vmrest (engine type ``VmwareWork``)."""
