"""Settings: the only place Kubeline reads environment variables (``KUBELINE_*``)."""

from __future__ import annotations

import json
import pathlib
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings

ExecutorName = Literal["local", "local-warm", "docker", "kubernetes", "kubernetes-pool"]


class Settings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix="KUBELINE_", extra="ignore")

    home: pathlib.Path = pydantic.Field(
        default_factory=lambda: pathlib.Path.home() / ".kubeline",
        description="Data dir: database, logs, venvs, secret key.",
    )
    database_url: str | None = pydantic.Field(
        None, description="SQLAlchemy URL; default SQLite in the data dir."
    )
    secret_key: str | None = pydantic.Field(
        None, description="Fernet key for secrets; the embedded default generates one in the data dir."
    )
    work_dir: pathlib.Path | None = pydantic.Field(
        None, description="Work dirs of local attempts (their small files and raw output while they run). "
                          "Default: on a tmpfs ($XDG_RUNTIME_DIR, else /dev/shm with 1 GiB free), else "
                          "the data dir's work/.")
    pipelines_dir: pathlib.Path | None = pydantic.Field(
        None, description="Folder whose subfolders are pipelines."
    )
    executor: ExecutorName = "local"
    executors: Annotated[list[ExecutorName] | None, pydantic_settings.NoDecode] = pydantic.Field(
        None, description="The executors this process registers (comma-separated, e.g. kubernetes,local): a "
                          "stage asking for another is refused. Default: the executor's own (local: local and "
                          "local-warm), plus kubernetes/docker when their URL/host is set. A server with only "
                          "kubernetes never runs user code in its own pod.")
    stage_env_passthrough: Annotated[list[str], pydantic_settings.NoDecode] = pydantic.Field(
        default_factory=list, description="Variables of the server's environment local stages may see besides "
                                          "the allow-list of executors.local_env (comma-separated names).")
    max_concurrent_attempts: int = pydantic.Field(16, ge=1)
    url: str | None = pydantic.Field(None, description="A Kubeline server; the CLI then uses its API.")
    log_line_limit: int = pydantic.Field(64 * 1024, ge=1024, description="Longer lines are split.")
    uv_cache_dir: pathlib.Path | None = None
    preheat_concurrency: int = pydantic.Field(
        2, ge=0, description="Virtualenvs built at once in the background when pipelines are discovered or synced, "
                             "so a first run does not pay the install; 0 turns pre-heating off.")
    lease_seconds: float = pydantic.Field(
        30.0, gt=0, description="A replica's hold on the runs it drives; a dead replica's runs are adopted after it."
    )
    replica_id: str | None = pydantic.Field(
        None, min_length=1, max_length=100,
        description="A server replica's stable identity, the owner of the runs it drives: restarted with the same "
                    "id, it reclaims those runs at once instead of waiting for their leases to expire. Two live "
                    "replicas must never share one (set it from the pod's name in Kubernetes). Default: host name "
                    "and process id, which a container restart keeps when the server is the container's first "
                    "process and two live processes on one host never share.")
    max_running_runs: int | None = pydantic.Field(
        None, ge=1, description="Runs running at once across all replicas (enforced in the claim)."
    )
    executor_caps: dict[str, int] = pydantic.Field(
        default_factory=dict, description='Running runs per executor across replicas, e.g. {"docker": 4}.'
    )
    max_request_bytes: int = pydantic.Field(
        1024 * 1024, ge=1024, description="API request bodies over this are refused (413)."
    )
    kubernetes_namespace: str = pydantic.Field(
        "default", description="Namespace of attempt Jobs (pipelines may override).")
    kubernetes_image: str = pydantic.Field("kubeline-worker:dev", description="Worker image of attempt pods.")
    upload_port: int = pydantic.Field(
        8081, ge=0, le=65535, description="Port of the attempt-upload listener `kubeline server` opens beside the API "
                                         "(the only port stage pods need; 0: any free port).")
    kubernetes_api_url: str | None = pydantic.Field(
        None, description="URL pods use to upload results to this server's attempt-upload listener "
        "(KUBELINE_UPLOAD_PORT, never the API port), e.g. http://kubeline.ns:8081; unset: pods hand results back "
        "through their log (works from a laptop with only a kubeconfig).")
    kubernetes_kubeconfig: pathlib.Path | None = pydantic.Field(
        None, description="Kubeconfig file; default: in-cluster ServiceAccount, else ~/.kube/config.")
    kubernetes_service_account: str | None = None
    kubernetes_pending_timeout: float = pydantic.Field(
        300.0, gt=0, description="Seconds an attempt pod may take to start before it fails.")
    kubernetes_ttl_seconds: int = pydantic.Field(3600, ge=0, description="Finished Jobs are kept this long.")
    kubernetes_uv_cache_claim: str | None = pydantic.Field(
        None, description="PVC for the pods' uv cache; default: an emptyDir per pod (or the code claim).")
    kubernetes_code_claim: str | None = pydantic.Field(
        None, description="PVC (in the attempts' namespace) that pods mount pipeline folders too large for a "
                          "ConfigMap from; without kubernetes_uv_cache_claim it holds the uv cache too.")
    kubernetes_code_dir: pathlib.Path | None = pydantic.Field(
        None, description="Where this server mounts the code claim's volume; it copies large folders there.")
    kubernetes_pools: list[dict[str, Any]] = pydantic.Field(
        default_factory=list,
        description='Worker pools of the kubernetes-pool executor, JSON: [{"name": "fast", "replicas": 2, "slots": 4, '
                    '"pipelines": ["etl"], "tags": ["quick"], "resources": {"limits": {"memory": "1Gi"}}}] '
                    "(fields: kubeline.domain.pools.PoolSpec).")
    kubernetes_pool_connect: Literal["proxy", "pod-ip"] = pydantic.Field(
        "proxy", description="How the server reaches pool pods: through the API server's pod proxy (works from "
                             "a laptop with a kubeconfig) or straight to the pod IPs (a server in the cluster).")
    kubernetes_pool_interval: float = pydantic.Field(
        2.0, gt=0, le=300, description="Seconds between rounds of the worker pools' controller (one server "
                                       "replica: scaling pools with autoscale, WorkerPool status).")

    git_repos: list[dict[str, Any]] = pydantic.Field(
        default_factory=list,
        description='Git repositories of pipelines, JSON: [{"name": "team", "url": "https://...", "branch": '
                    '"main", "subdir": "pipelines", "interval": 60, "token_secret": "GH_TOKEN"}] '
                    "(fields: kubeline.domain.repos.RepoSpec).")

    notifications: list[dict[str, Any]] = pydantic.Field(
        default_factory=list, description='Global notifications, JSON: [{"channel": "slack", "url_secret": '
                                          '"SLACK_URL", "on": ["failure", "recovery"]}] (every pipeline).')
    public_url: str = pydantic.Field(
        "http://127.0.0.1:8080", description="This server's URL as people reach it (links in notifications).")
    retention: dict[str, Any] = pydantic.Field(
        default_factory=dict, description='Default retention, JSON: {"max_age_days": 30, "max_runs": 500, '
                                          '"logs_max_age_days": 14, "artifacts_max_age_days": 14}; pipelines override.')
    retention_interval: float = pydantic.Field(3600, gt=0, description="Seconds between retention passes.")
    log_max_bytes: int | None = pydantic.Field(
        None, ge=4096, description="A finished attempt's log above this is cut to its tail behind a marker line.")
    prune_after_days: float = pydantic.Field(
        30, gt=0, description="Virtualenvs unused and git checkouts not served for this long are deleted.")
    notify_timeout: float = pydantic.Field(
        10.0, gt=0, description="Seconds one notification delivery may take (a hanging receiver is retried later).")
    smtp_host: str | None = pydantic.Field(None, description="SMTP server for email notifications.")
    smtp_port: int = 587
    smtp_starttls: bool = pydantic.Field(True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str | None = None
    smtp_password: pydantic.SecretStr | None = None
    smtp_from: str = "kubeline@localhost"
    smtp_cafile: pathlib.Path | None = pydantic.Field(
        None, description="CA bundle to verify the SMTP server's certificate (default: the system's).")

    docker_host: str | None = pydantic.Field(
        None, description="Docker daemon URL, e.g. unix:///var/run/docker.sock (default: the SDK's "
                          "default socket); it must share this machine's filesystem (bind mounts).")
    docker_image: str = pydantic.Field("kubeline-worker:dev",
                                       description="Worker image of attempt containers (never pulled).")
    docker_network: str | None = pydantic.Field(
        None, description='Network of attempt containers ("none", "bridge", ...); default: the '
                          "daemon's bridge when it has one, else none.")

    # access control (kubeline.auth) -------------------------------------------------------------
    auth_enabled: bool = pydantic.Field(
        True, description="Every API route asks who calls. Off only with `kubeline server --insecure-no-auth` "
                          "(or false here), and then the server listens on loopback only.")
    admin_password: pydantic.SecretStr | None = pydantic.Field(
        None, description="Password of the first admin created when there is no user (changed at first login); "
                          "default: a one-time password printed once.")
    admin_token: pydantic.SecretStr | None = pydantic.Field(
        None, description="A service token with the admin role, ensured at start (for automation: CI, a "
                          "deploy's first setup); stored hashed.")
    token: pydantic.SecretStr | None = pydantic.Field(
        None, description="API token the CLI and kubeline.client send (else `kubeline login`'s stored one).")
    session_idle_minutes: float = pydantic.Field(60.0, gt=0, description="A browser session ends after this idle.")
    session_max_hours: float = pydantic.Field(12.0, gt=0, description="A browser session ends after this at most.")
    cookie_secure: bool | None = pydantic.Field(
        None, description="Secure cookies; default: on unless the request came over plain http to loopback.")
    login_lock_after: int = pydantic.Field(5, ge=1, description="Failed passwords before an account is locked.")
    login_lock_seconds: float = pydantic.Field(60.0, ge=0, description="First lock; it doubles while failures go on.")
    scripts_enabled: bool = pydantic.Field(
        False, description="Serve POST /api/v1/scripts (runs posted code; operators only).")
    metrics_token: pydantic.SecretStr | None = pydantic.Field(
        None, description="When set, /metrics answers only to `Authorization: Bearer <this>`.")
    oidc_providers: list[dict[str, Any]] = pydantic.Field(
        default_factory=list, description="OAuth/OIDC login providers as JSON (see kubeline.auth.oidc).")
    audit_retention_days: int = pydantic.Field(365, ge=1, description="Audit rows older than this are deleted.")

    @pydantic.field_validator("executors", "stage_env_passthrough", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @pydantic.field_validator("stage_env_passthrough")
    @classmethod
    def _no_kubeline_variables(cls, value: list[str]) -> list[str]:
        refused = [name for name in value if name.startswith("KUBELINE_")]
        if refused:
            raise ValueError(f"{', '.join(refused)}: the server's KUBELINE_* settings never reach a stage; "
                             "remove them from KUBELINE_STAGE_ENV_PASSTHROUGH")
        return value

    @pydantic.model_validator(mode="after")
    def _executor_is_registered(self) -> Settings:
        if self.executors is not None and self.executor not in self.executors:
            raise ValueError(f"KUBELINE_EXECUTOR={self.executor} is not in KUBELINE_EXECUTORS="
                             f"{','.join(self.executors)}; add it there or choose one of those")
        return self

    @property
    def enabled_executors(self) -> tuple[ExecutorName, ...]:
        """The executors to register (see ``executors``)."""
        if self.executors is not None:
            return tuple(dict.fromkeys(self.executors))
        found: list[ExecutorName] = [self.executor]
        if self.executor in ("local", "local-warm"):
            found = ["local", "local-warm"]
        if self.kubernetes_api_url:
            found.append("kubernetes")
        if self.docker_host:
            found.append("docker")
        return tuple(dict.fromkeys(found))

    log_store: Literal["files", "s3"] = pydantic.Field(
        "files", description="Where attempt logs live: files under the data dir (one server), or chunks in an "
                             "S3-compatible bucket with an index in the database (several replicas, no shared volume).")
    log_s3_bucket: str | None = pydantic.Field(None, description="Bucket of the s3 log store (it must exist).")
    log_s3_prefix: str = pydantic.Field("logs/", description="Key prefix of log chunks in the bucket.")
    log_s3_endpoint_url: str | None = pydantic.Field(
        None, description="S3-compatible endpoint (MinIO, Ceph, ...); default: AWS S3.")
    log_s3_region: str | None = None
    log_s3_access_key_id: str | None = pydantic.Field(
        None, description="Default: boto3's own chain (AWS_ACCESS_KEY_ID, a web identity, an instance role).")
    log_s3_secret_access_key: pydantic.SecretStr | None = None
    log_chunk_seconds: float = pydantic.Field(
        1.0, gt=0, description="A running attempt's new lines are uploaded as a chunk this often.")
    log_follow_poll: float = pydantic.Field(
        10.0, gt=0, description="Safety net: seconds between index reads of a follower waiting for another "
                                "replica's chunks (they wake it at once through the LOGS wake-up).")

    @pydantic.model_validator(mode="after")
    def _s3_log_store_has_a_bucket(self) -> Settings:
        if self.log_store == "s3" and not self.log_s3_bucket:
            raise ValueError("KUBELINE_LOG_STORE=s3 needs KUBELINE_LOG_S3_BUCKET (an existing bucket; set "
                             "KUBELINE_LOG_S3_ENDPOINT_URL too for a store other than AWS S3)")
        return self

    @pydantic.model_validator(mode="after")
    def _code_claim_and_dir_together(self) -> Settings:
        if (self.kubernetes_code_claim is None) != (self.kubernetes_code_dir is None):
            raise ValueError(
                "KUBELINE_KUBERNETES_CODE_CLAIM and KUBELINE_KUBERNETES_CODE_DIR go together: the PVC the "
                "pods mount, and where this server sees that same volume mounted; set both, or neither")
        return self

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'kubeline.db'}"

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.home / "logs"

    @property
    def git_dir(self) -> pathlib.Path:
        return self.home / "git"

    @property
    def log_spool_dir(self) -> pathlib.Path:
        """Lines of the s3 log store waiting to be uploaded (local disk of this replica)."""
        return self.home / "log-spool"

    @property
    def venvs_dir(self) -> pathlib.Path:
        return self.home / "venvs"

    @property
    def key_file(self) -> pathlib.Path:
        return self.home / "secret.key"
