"""A container's environment, worked out as a kubelet does it; no I/O.

The caller fetches what the container spec refers to (the namespace's Services, the ConfigMaps
and Secrets named by ``envFrom`` and ``valueFrom``) into ``EnvSources``; this module only
combines them. Precedence, lowest first, is the kubelet's:

1. the image's defaults (PATH, HOME) and HOSTNAME;
2. the ``kubernetes`` Service's variables, set for every pod;
3. Docker-links-style variables for each Service of the pod's namespace (``enableServiceLinks``);
4. ``envFrom`` sources, in order;
5. ``env`` entries, in order: a ``value`` may refer to any variable set before it as ``$(NAME)``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from septum.lab import config
from septum.lab.errors import LabError
from septum.lab.kubelet.downward import field_value
from septum.lab.kubelet.objects import JSON

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvSourceError(LabError):
    """A ``valueFrom`` names a ConfigMap, Secret or key that could not be read."""


@dataclass(frozen=True)
class EnvSources:
    """What the API returned for the objects a container's environment refers to.

    A ConfigMap or Secret missing from its mapping could not be read (not found, or forbidden).
    """

    services: Sequence[JSON] = ()
    configmaps: Mapping[str, JSON] = field(default_factory=dict)
    secrets: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerEnv:
    """The variables to start the container with, and the ``valueFrom`` entries left empty.

    Kubernetes refuses to start a container whose ``valueFrom`` cannot be resolved
    (CreateContainerConfigError); the lab sets such a variable to "" and reports why instead.
    """

    variables: dict[str, str]
    unresolved: list[EnvSourceError]


def referenced_configmaps(container: JSON) -> set[str]:
    """Names of the ConfigMaps the container's ``envFrom`` and ``valueFrom`` read."""
    return _referenced(container, "configMapRef", "configMapKeyRef")


def referenced_secrets(container: JSON) -> set[str]:
    """Names of the Secrets the container's ``envFrom`` and ``valueFrom`` read."""
    return _referenced(container, "secretRef", "secretKeyRef")


def _referenced(container: JSON, env_from_kind: str, key_ref_kind: str) -> set[str]:
    names = {
        src[env_from_kind]["name"] for src in container.get("envFrom", []) if env_from_kind in src
    }
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get(key_ref_kind)
        if ref is not None:
            names.add(ref["name"])
    return names


def kubernetes_service_env() -> dict[str, str]:
    """The ``kubernetes`` Service's variables, which every pod gets whatever its namespace."""
    ip = config.KUBERNETES_SERVICE_IP
    return {
        "KUBERNETES_SERVICE_HOST": ip,
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": f"tcp://{ip}:443",
    }


def service_link_env(services: Iterable[JSON]) -> dict[str, str]:
    """Docker-links-style variables for Services with a cluster IP and at least one port.

    For a Service ``my-svc`` at 10.96.0.5 with port 80/TCP named ``http``: MY_SVC_SERVICE_HOST,
    MY_SVC_SERVICE_PORT and MY_SVC_PORT describe the first port; MY_SVC_SERVICE_PORT_HTTP and
    MY_SVC_PORT_80_TCP{,_PROTO,_PORT,_ADDR} describe each port.
    """
    env: dict[str, str] = {}
    for svc in services:
        ip = svc["spec"].get("clusterIP")
        ports = svc["spec"].get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = _env_name(svc["metadata"]["name"])
        first = ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
            base = f"{prefix}_PORT_{port['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
    return env


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def expand(value: str, env: Mapping[str, str]) -> str:
    """``value`` with each ``$(NAME)`` of a variable in ``env`` replaced by its value.

    Kubernetes' syntax: ``$$`` is a literal ``$`` (so ``$$(NAME)`` stays ``$(NAME)``), a
    reference to an unknown variable stays as written, and a substituted value is not
    expanded again.
    """
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("$(", i):
            end = value.find(")", i + 2)
            if end != -1:
                written = value[i : end + 1]
                out.append(env.get(value[i + 2 : end], written))
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def expand_all(values: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """A container's ``command`` or ``args`` with ``$(NAME)`` references expanded
    (``expand``), as the kubelet does with the container's final environment."""
    return [expand(value, env) for value in values]


def value_from(source: JSON, pod: JSON, sources: EnvSources, field_path: str) -> str:
    """The value of one ``valueFrom``, which errors name by ``field_path`` (``env[2].valueFrom``).

    Raises EnvSourceError for a ConfigMap, Secret or key that does not exist, unless the
    reference is ``optional`` (then the value is ""). ``fieldRef`` reads ``pod``, whose
    ``status`` must already carry podIP and hostIP.
    """
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        data = _lookup(sources.configmaps, ref, "ConfigMap", pod, f"{field_path}.configMapKeyRef")
        return str(data[ref["key"]]) if ref["key"] in data else ""
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        data = _lookup(sources.secrets, ref, "Secret", pod, f"{field_path}.secretKeyRef")
        return base64.b64decode(data[ref["key"]]).decode() if ref["key"] in data else ""
    # resourceFieldRef: the lab sets no resource limits to report.
    return ""


def _lookup(
    objects: Mapping[str, JSON], ref: JSON, kind: str, pod: JSON, field_path: str
) -> Mapping[str, str]:
    """The ``data`` of the object ``ref`` names; an optional reference to nothing gives {}."""
    where = f"{pod['metadata']['namespace']}/{ref['name']}"
    obj = objects.get(ref["name"])
    if obj is None:
        if ref.get("optional"):
            return {}
        raise EnvSourceError(f"{field_path}.name: {kind} {where} could not be read")
    data: Mapping[str, str] = obj.get("data", {})
    if ref["key"] not in data and not ref.get("optional"):
        raise EnvSourceError(f'{field_path}.key: no key "{ref["key"]}" in {kind} {where}')
    return data


def container_env(container: JSON, pod: JSON, sources: EnvSources) -> ContainerEnv:
    """The environment of ``container`` (a pod spec's container entry) in ``pod``."""
    spec = pod["spec"]
    env = {
        "PATH": IMAGE_PATH,
        "HOSTNAME": spec.get("hostname", pod["metadata"]["name"]),
        "HOME": "/root",
        **kubernetes_service_env(),
    }
    if spec.get("enableServiceLinks", True):
        env.update(service_link_env(sources.services))
    for src in container.get("envFrom", []):
        env.update(_env_from(src, sources))
    unresolved: list[EnvSourceError] = []
    for index, item in enumerate(container.get("env", [])):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "valueFrom" in item:
            try:
                value = value_from(item["valueFrom"], pod, sources, f"env[{index}].valueFrom")
            except EnvSourceError as err:
                unresolved.append(err)
                value = ""
            env[item["name"]] = value
    return ContainerEnv(env, unresolved)


def _env_from(src: JSON, sources: EnvSources) -> dict[str, str]:
    """One ``envFrom`` entry's variables; a source that could not be read adds none."""
    prefix = src.get("prefix", "")
    if "configMapRef" in src:
        cm = sources.configmaps.get(src["configMapRef"]["name"], {})
        return {prefix + k: v for k, v in cm.get("data", {}).items()}
    if "secretRef" in src:
        secret = sources.secrets.get(src["secretRef"]["name"], {})
        return {prefix + k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {}
