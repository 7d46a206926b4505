"""Faults the simulator really raises become clear business errors (``errors.backend_errors``)."""

from __future__ import annotations

import pytest
from idcs_esxi import testing
from idcs_esxi.errors import backend_errors
from pyVim.connect import Disconnect
from pyVmomi import vim

from idcs_core import errors


def _model_vm(si: vim.ServiceInstance, name: str) -> vim.VirtualMachine:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(v for v in view.view if v.name == name)
    finally:
        view.DestroyView()


def test_real_faults_become_business_errors(vpx: testing.Vcsim) -> None:
    si = testing.service_instance(vpx)
    try:
        running = _model_vm(si, "DC0_H0_VM1")
        with pytest.raises(errors.VMOperationFailed, match="while the VM is poweredOn"):
            with backend_errors("marking DC0_H0_VM1 as a template"):
                running.MarkAsTemplate()

        content = si.RetrieveContent()
        dc = content.rootFolder.childEntity[0]
        with pytest.raises(errors.Conflict, match="name is taken"):
            with backend_errors("creating folder vm"):
                content.rootFolder.CreateFolder(name=dc.name)
        with pytest.raises(errors.Conflict, match="already exists"):
            with backend_errors("making the iso folder"):
                content.fileManager.MakeDirectory(name="[LocalDS_0] iso", datacenter=dc,
                                                  createParentDirectories=False)

        with pytest.raises(errors.HostUnreachable, match="refused the login"):
            with backend_errors("logging in"):
                si.RetrieveContent().sessionManager.Login(userName=vpx.user, password="Wrong-1")
    finally:
        Disconnect(si)
