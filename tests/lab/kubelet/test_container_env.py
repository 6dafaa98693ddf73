"""A container's environment: precedence, $(VAR) expansion, service links and valueFrom."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from septum.lab import config
from septum.lab.errors import LabError
from septum.lab.kubelet.container_env import (
    EnvSourceError,
    EnvSources,
    container_env,
    expand,
    expand_all,
    referenced_configmaps,
    referenced_secrets,
    service_link_env,
    value_from,
)

JSON = dict[str, Any]


def make_pod(**spec: Any) -> JSON:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", **spec},
        "status": {"podIP": "10.1.0.7", "hostIP": "172.30.0.2"},
    }


def service(name: str, ip: str, *ports: JSON) -> JSON:
    return {"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": list(ports)}}


def configmap(**data: str) -> JSON:
    return {"data": data}


def secret(**data: str) -> JSON:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def env_of(container: JSON, pod: JSON | None = None, sources: EnvSources | None = None) -> JSON:
    result = container_env({"name": "app", **container}, pod or make_pod(), sources or EnvSources())
    assert result.unresolved == []
    return result.variables


# --- $(VAR) expansion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)", "1"),
        ("x-$(A)-$(B)-y", "x-1-two-y"),
        ("$(MISSING)", "$(MISSING)"),  # unknown references stay as written
        ("$$(A)", "$(A)"),  # "$$" escapes the reference
        ("$$$(A)", "$1"),
        ("cost: $$5", "cost: $5"),
        ("$A", "$A"),  # only the $(NAME) form refers to a variable
        ("$(A", "$(A"),  # unterminated
        ("trailing $", "trailing $"),
        ("$()", "$()"),
        ("$(SELF)", "$(A)"),  # a substituted value is not expanded again
    ],
)
def test_expand_follows_kubernetes_syntax(value: str, expected: str) -> None:
    assert expand(value, {"A": "1", "B": "two", "SELF": "$(A)"}) == expected


def test_env_sees_only_variables_declared_before_it() -> None:
    env = env_of(
        {
            "env": [
                {"name": "FIRST", "value": "[$(SECOND)]"},
                {"name": "SECOND", "value": "2"},
                {"name": "THIRD", "value": "$(FIRST)$(SECOND)"},
            ]
        }
    )
    assert env["FIRST"] == "[$(SECOND)]"
    assert env["THIRD"] == "[$(SECOND)]2"


def test_a_redeclared_variable_expands_the_earlier_value() -> None:
    env = env_of({"env": [{"name": "P", "value": "a"}, {"name": "P", "value": "$(P):b"}]})
    assert env["P"] == "a:b"


def test_command_and_args_expand_against_the_final_environment() -> None:
    # The agent's DaemonSet: --node $(NODE_NAME) from a fieldRef declared after nothing else.
    pod = make_pod()
    container = {
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    }
    env = container_env(container, pod, EnvSources()).variables
    argv = ["septum", "agent", "--node", "$(NODE_NAME)", "--api=$(KUBERNETES_SERVICE_HOST)"]
    assert expand_all(argv, env) == [
        "septum",
        "agent",
        "--node",
        "node-1",
        f"--api={config.KUBERNETES_SERVICE_IP}",
    ]
    assert expand_all(["$$(NODE_NAME)", "$(UNSET)"], env) == ["$(NODE_NAME)", "$(UNSET)"]


# --- precedence -----------------------------------------------------------------------------


def test_defaults_and_the_kubernetes_service_are_always_set() -> None:
    env = env_of({}, make_pod(hostname="shop-1", enableServiceLinks=False))
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "shop-1"
    ip = config.KUBERNETES_SERVICE_IP
    assert env["KUBERNETES_SERVICE_HOST"] == ip
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == f"tcp://{ip}:443"


def test_hostname_defaults_to_the_pod_name() -> None:
    assert env_of({})["HOSTNAME"] == "web"


def test_env_overrides_env_from_which_overrides_service_links() -> None:
    sources = EnvSources(
        services=[service("db", "10.96.0.9", {"port": 5432})],
        configmaps={"settings": configmap(DB_SERVICE_HOST="from-configmap", MODE="fast")},
    )
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [{"name": "MODE", "value": "slow, not $(MODE)"}],
    }
    env = env_of(container, sources=sources)
    assert env["DB_SERVICE_HOST"] == "from-configmap"
    assert env["DB_SERVICE_PORT"] == "5432"
    assert env["MODE"] == "slow, not fast"


def test_later_env_from_sources_win_and_prefixes_apply() -> None:
    sources = EnvSources(
        configmaps={"a": configmap(X="a", Y="a")},
        secrets={"b": secret(X="b-secret")},
    )
    container = {
        "envFrom": [
            {"configMapRef": {"name": "a"}},
            {"secretRef": {"name": "b"}},
            {"configMapRef": {"name": "a"}, "prefix": "A_"},
        ]
    }
    env = env_of(container, sources=sources)
    assert (env["X"], env["Y"], env["A_X"]) == ("b-secret", "a", "a")


def test_an_env_from_source_that_could_not_be_read_adds_nothing() -> None:
    env = env_of({"envFrom": [{"configMapRef": {"name": "gone"}}, {"secretRef": {"name": "gone"}}]})
    assert "gone" not in str(env)


def test_service_links_can_be_turned_off() -> None:
    sources = EnvSources(services=[service("db", "10.96.0.9", {"port": 5432})])
    env = env_of({}, make_pod(enableServiceLinks=False), sources)
    assert "DB_SERVICE_HOST" not in env


# --- service links --------------------------------------------------------------------------


def test_service_link_variables() -> None:
    svc = service(
        "my-svc",
        "10.96.0.5",
        {"name": "http", "port": 80},
        {"name": "dns-udp", "port": 53, "protocol": "UDP"},
    )
    assert service_link_env([svc]) == {
        "MY_SVC_SERVICE_HOST": "10.96.0.5",
        "MY_SVC_SERVICE_PORT": "80",
        "MY_SVC_PORT": "tcp://10.96.0.5:80",
        "MY_SVC_SERVICE_PORT_HTTP": "80",
        "MY_SVC_PORT_80_TCP": "tcp://10.96.0.5:80",
        "MY_SVC_PORT_80_TCP_PROTO": "tcp",
        "MY_SVC_PORT_80_TCP_PORT": "80",
        "MY_SVC_PORT_80_TCP_ADDR": "10.96.0.5",
        "MY_SVC_SERVICE_PORT_DNS_UDP": "53",
        "MY_SVC_PORT_53_UDP": "udp://10.96.0.5:53",
        "MY_SVC_PORT_53_UDP_PROTO": "udp",
        "MY_SVC_PORT_53_UDP_PORT": "53",
        "MY_SVC_PORT_53_UDP_ADDR": "10.96.0.5",
    }


def test_headless_unallocated_and_portless_services_have_no_links() -> None:
    services = [
        service("headless", "None", {"port": 80}),
        service("pending", "", {"port": 80}),
        service("portless", "10.96.0.6"),
    ]
    assert service_link_env(services) == {}


# --- valueFrom ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_path", "expected"),
    [
        ("metadata.name", "web"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("spec.nodeName", "node-1"),
        ("spec.serviceAccountName", "default"),
        ("status.podIP", "10.1.0.7"),
        ("status.hostIP", "172.30.0.2"),
    ],
)
def test_field_ref(field_path: str, expected: str) -> None:
    source = {"fieldRef": {"fieldPath": field_path}}
    assert value_from(source, make_pod(), EnvSources(), "env[0].valueFrom") == expected


def test_config_map_and_secret_key_refs() -> None:
    sources = EnvSources(configmaps={"cm": configmap(k="v")}, secrets={"s": secret(pw="hunter2")})
    container = {
        "env": [
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "BOTH", "value": "$(FROM_CM)/$(FROM_SECRET)"},
        ]
    }
    env = env_of(container, sources=sources)
    assert (env["FROM_CM"], env["FROM_SECRET"], env["BOTH"]) == ("v", "hunter2", "v/hunter2")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"configMapKeyRef": {"name": "cm", "key": "nope"}},
            'env[3].valueFrom.configMapKeyRef.key: no key "nope" in ConfigMap shop/cm',
        ),
        (
            {"secretKeyRef": {"name": "s", "key": "nope"}},
            'env[3].valueFrom.secretKeyRef.key: no key "nope" in Secret shop/s',
        ),
        (
            {"configMapKeyRef": {"name": "gone", "key": "k"}},
            "env[3].valueFrom.configMapKeyRef.name: ConfigMap shop/gone could not be read",
        ),
        (
            {"secretKeyRef": {"name": "gone", "key": "k"}},
            "env[3].valueFrom.secretKeyRef.name: Secret shop/gone could not be read",
        ),
    ],
)
def test_a_missing_key_or_object_is_an_error_naming_the_field(source: JSON, message: str) -> None:
    sources = EnvSources(configmaps={"cm": configmap(k="v")}, secrets={"s": secret(k="v")})
    with pytest.raises(EnvSourceError) as err:
        value_from(source, make_pod(), sources, "env[3].valueFrom")
    assert str(err.value) == message
    assert isinstance(err.value, LabError)


def test_an_optional_reference_to_nothing_is_empty() -> None:
    sources = EnvSources(configmaps={"cm": configmap(k="v")})
    for ref in ({"name": "cm", "key": "nope"}, {"name": "gone", "key": "k"}):
        source = {"configMapKeyRef": {**ref, "optional": True}}
        assert value_from(source, make_pod(), sources, "env[0].valueFrom") == ""


def test_an_unresolved_value_from_is_empty_and_reported() -> None:
    container = {
        "name": "app",
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
            {"name": "B", "value": "[$(A)]"},
        ],
    }
    result = container_env(container, make_pod(), EnvSources())
    assert (result.variables["A"], result.variables["B"]) == ("", "[]")
    assert [str(e) for e in result.unresolved] == [
        "env[0].valueFrom.configMapKeyRef.name: ConfigMap shop/gone could not be read"
    ]


def test_referenced_objects_are_those_env_from_and_value_from_name() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm-a"}}, {"secretRef": {"name": "s-a"}}],
        "env": [
            {"name": "X", "value": "x"},
            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm-b", "key": "k"}}},
            {"name": "Z", "valueFrom": {"secretKeyRef": {"name": "s-b", "key": "k"}}},
            {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }
    assert referenced_configmaps(container) == {"cm-a", "cm-b"}
    assert referenced_secrets(container) == {"s-a", "s-b"}
