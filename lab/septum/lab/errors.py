"""The lab's exception tree: every error a user can hit carries one line saying what to do.

Every exception the lab raises on purpose derives from ``LabError``, so a caller (the CLI, a
test fixture) can catch the lab's own failures in one place and show ``str(err)`` as is::

    LabError                        septum.lab.errors
    ├── NotRootError                  the lab needs root; ``septum lab up`` as another user
    ├── PortInUseError                a control-plane port is taken (names the port and owner)
    ├── BinariesMissingError          the Go-built binaries are not cached (says how to build)
    ├── StartupError                  a control-plane process or ``kubectl`` step failed
    ├── NoLabError                    a command needs a running lab and there is none
    ├── CommandError                  a system tool (ip, iptables, ...) exited non-zero
    └── the lab kubelet's errors, defined next to the code that raises them:
        ├── ApiError                  septum.lab.kubelet.api: the API server answered >= 400
        ├── CniError                  septum.lab.kubelet.cni: a CNI plugin or its config failed
        ├── UnknownImage              septum.lab.kubelet.images: no local workload for an image
        ├── EnvSourceError            septum.lab.kubelet.container_env: a valueFrom source or
        │                             key a container's env names does not exist
        └── HostPathError             septum.lab.kubelet.volumes: a hostPath is missing or not
                                      of the type its volume names

The first six end a ``septum lab`` command with their one line. The kubelet's are reported
on the pod they concern (its status, events or the kubelet's log) and retried, as a real
kubelet does.
"""

from __future__ import annotations


class LabError(Exception):
    """Base of every lab error; ``str()`` is the one line shown to the user."""


class NotRootError(LabError):
    pass


class PortInUseError(LabError):
    pass


class BinariesMissingError(LabError):
    pass


class StartupError(LabError):
    pass


class NoLabError(LabError):
    pass


class CommandError(LabError):
    """A system tool the lab drives failed; the message quotes the command and its stderr."""
