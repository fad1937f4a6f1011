"""The API features Kubeline's operator and server rely on: RBAC, CRDs, ServiceAccount tokens."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .support import Cluster, wait_until


def _service_account_token(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The token of a ServiceAccount's token Secret (1.20 creates one per ServiceAccount)."""
    import base64

    def token() -> str | None:
        sa = core.read_namespaced_service_account(name, namespace)
        for ref in sa.secrets or []:
            secret = core.read_namespaced_secret(ref.name, namespace)
            if secret.type == "kubernetes.io/service-account-token" and secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        # Newer clusters create no token Secret: ask for a bound token instead.
        if sa.secrets is None:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            )
            return str(core.create_namespaced_service_account_token(name, namespace, request).status.token)
        return None

    return str(wait_until(token, timeout=30, what=f"a token for ServiceAccount {namespace}/{name}"))


def _client_as(cluster: Cluster, api_client: Any, token: str) -> client.ApiClient:
    """An ApiClient for the same server and CA, authenticated only by `token`."""
    base = api_client.configuration
    conf = client.Configuration()
    conf.host = base.host
    conf.ssl_ca_cert = base.ssl_ca_cert
    conf.verify_ssl = base.verify_ssl
    conf.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(conf)


@pytest.fixture(scope="module")
def reader(cluster: Cluster, api_client: Any, namespace: str) -> Iterator[client.ApiClient]:
    """A ServiceAccount bound to a Role that may only read ConfigMaps, as a client."""
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list", "watch"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"k": "v"}),
    )
    token = _service_account_token(core, namespace, "reader")
    as_reader = _client_as(cluster, api_client, token)
    yield as_reader
    as_reader.close()


def test_service_account_token_authenticates_as_the_service_account(
    api_client: Any, namespace: str, reader: client.ApiClient
) -> None:
    token = reader.configuration.api_key["authorization"].removeprefix("Bearer ")
    review = client.AuthenticationV1Api(api_client).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:reader"


def test_rbac_role_allows_what_it_grants(namespace: str, reader: client.ApiClient) -> None:
    core = client.CoreV1Api(reader)
    names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    assert "settings" in names
    assert core.read_namespaced_config_map("settings", namespace).data == {"k": "v"}


@pytest.mark.parametrize("action", ["create configmap", "list secrets", "list pods elsewhere"])
def test_rbac_forbids_everything_else(namespace: str, reader: client.ApiClient, action: str) -> None:
    core = client.CoreV1Api(reader)
    with pytest.raises(ApiException) as excinfo:
        if action == "create configmap":
            core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope")))
        elif action == "list secrets":
            core.list_namespaced_secret(namespace)
        else:
            core.list_namespaced_pod("kube-system")
    assert excinfo.value.status == 403, excinfo.value.body


def test_custom_resource_definition_and_object(api_client: Any, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    group = "e2e.kubeline.dev"
    plural = f"widgets{secrets.token_hex(3)}"  # unique: CRD deletion is asynchronous
    crd_name = f"{plural}.{group}"
    ext.create_custom_resource_definition(
        client.V1CustomResourceDefinition(
            metadata=client.V1ObjectMeta(name=crd_name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=group,
                scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(
                    plural=plural, singular=plural[:-1], kind=f"Widget{plural[7:]}"
                ),
                versions=[
                    client.V1CustomResourceDefinitionVersion(
                        name="v1",
                        served=True,
                        storage=True,
                        subresources=client.V1CustomResourceSubresources(status={}),
                        schema=client.V1CustomResourceValidation(
                            open_apiv3_schema=client.V1JSONSchemaProps(
                                type="object",
                                properties={
                                    "spec": client.V1JSONSchemaProps(
                                        type="object",
                                        required=["size"],
                                        properties={"size": client.V1JSONSchemaProps(type="integer", minimum=1)},
                                    ),
                                    "status": client.V1JSONSchemaProps(
                                        type="object", x_kubernetes_preserve_unknown_fields=True
                                    ),
                                },
                            )
                        ),
                    )
                ],
            ),
        )
    )
    try:

        def established() -> bool:
            crd = ext.read_custom_resource_definition(crd_name)
            return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

        wait_until(established, timeout=30, what=f"CRD {crd_name} Established")
        kind = f"Widget{plural[7:]}"
        body = {
            "apiVersion": f"{group}/v1",
            "kind": kind,
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)
        got = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w1")
        assert got["spec"] == {"size": 3}

        # The schema is enforced by the API server.
        with pytest.raises(ApiException) as excinfo:
            bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
            custom.create_namespaced_custom_object(group, "v1", namespace, plural, bad)
        assert excinfo.value.status == 422

        # The status subresource is separate from the main resource, as operators need.
        got["status"] = {"phase": "Ready"}
        custom.patch_namespaced_custom_object_status(
            group, "v1", namespace, plural, "w1", {"status": {"phase": "Ready"}}
        )
        got = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w1")
        assert got["status"] == {"phase": "Ready"}
    finally:
        ext.delete_custom_resource_definition(crd_name)
