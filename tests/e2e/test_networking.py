"""Pod networking: the API server through its Service IP, and Service DNS between pods."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from kubernetes import client

from .support import Pods

CALL_API_SERVER = textwrap.dedent(
    """
    import json, os, ssl, urllib.request
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(sa + "/token").read()
    ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
    base = "https://kubernetes.default.svc"
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    version = json.load(urllib.request.urlopen(base + "/version", context=ctx, timeout=10))
    # Any authenticated user may ask what it may do: a 201 proves the token was accepted.
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "list", "resource": "pods",
                                              "namespace": open(sa + "/namespace").read()}}}
    req = urllib.request.Request(base + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                 data=json.dumps(review).encode(), headers=headers)
    answer = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
    print(json.dumps({"service_host": os.environ["KUBERNETES_SERVICE_HOST"],
                      "version": version["gitVersion"], "allowed": answer["status"]["allowed"]}))
    """
)


def test_pod_calls_api_server_through_service_ip_with_its_token(namespace: str, pods: Pods) -> None:
    result = pods.run(namespace, name="call-api", code=CALL_API_SERVER)
    assert result.phase == "Succeeded", result.logs
    answer = json.loads(result.logs.strip().splitlines()[-1])
    assert answer["version"].startswith("v1.")
    # The default ServiceAccount may not list pods: RBAC applies to in-cluster calls too.
    assert answer["allowed"] is False


WEB_SERVER = textwrap.dedent(
    """
    import http.server
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from web"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer(("", 8080), Hello).serve_forever()
    """
)

WEB_CLIENT = textwrap.dedent(
    """
    import sys, time, urllib.request
    deadline = time.monotonic() + 30
    for url in sys.argv[1:]:
        while True:
            try:
                print(url, urllib.request.urlopen(url, timeout=3).read().decode())
                break
            except OSError as exc:  # the DNS sync loop may lag the Service by a second
                if time.monotonic() > deadline:
                    raise
                print("retrying", url, exc, file=sys.stderr)
                time.sleep(0.5)
    """
)


def test_service_dns_between_pods(api_client: Any, namespace: str, pods: Pods) -> None:
    core = client.CoreV1Api(api_client)
    pods.start(namespace, name="web", code=WEB_SERVER, labels={"app": "web"}, port=8080)
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        ),
    )
    pods.wait_running(namespace, "web")

    fqdn = f"http://web.{namespace}.svc.cluster.local/"
    code = WEB_CLIENT.replace("sys.argv[1:]", repr(["http://web/", fqdn]))
    result = pods.run(namespace, name="web-client", code=code)
    assert result.phase == "Succeeded", result.logs
    assert "http://web/ hello from web" in result.logs
    assert f"{fqdn} hello from web" in result.logs


RESOLVE = textwrap.dedent(
    """
    import socket, sys, time
    deadline = time.monotonic() + 30
    for name in sys.argv[1:]:
        while True:
            try:
                print(name, socket.gethostbyname(name))
                break
            except OSError:  # the DNS sync loop may lag the Service by a second
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    """
)


def test_headless_service_dns_names_its_pods(api_client: Any, namespace: str, pods: Pods) -> None:
    """A StatefulSet-style pod (hostname + subdomain) behind a headless Service, as PostgreSQL is."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1ServiceSpec(
                cluster_ip="None",
                selector={"app": "db"},
                ports=[client.V1ServicePort(port=5432)],
            ),
        ),
    )
    pods.start(
        namespace, name="db-0", code=WEB_SERVER, labels={"app": "db"}, port=8080, hostname="db-0", subdomain="db"
    )
    pod_ip = pods.wait_running(namespace, "db-0").status.pod_ip

    code = RESOLVE.replace("sys.argv[1:]", repr(["db-0.db", "db"]))
    result = pods.run(namespace, name="resolver", code=code)
    assert result.phase == "Succeeded", result.logs
    assert f"db-0.db {pod_ip}" in result.logs
    assert f"db {pod_ip}" in result.logs
