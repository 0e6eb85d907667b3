"""The one settings object: environment variables prefixed AGRITRACE_, or the local stack's env file."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that mark a secret nobody chose; refused outside local mode.
PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "changeme", "secret", "password", "local"})


def _env_file() -> Path:
    """Where `make up` writes the local stack's connection settings."""
    explicit = os.environ.get("AGRITRACE_ENV_FILE")
    if explicit:
        return Path(explicit)
    return Path.cwd() / ".local" / "agritrace.env"


class Settings(BaseSettings):
    """Everything configurable, with defaults that suit the local stack."""

    model_config = SettingsConfigDict(env_prefix="AGRITRACE_", extra="ignore")

    mode: Literal["local", "production"] = "local"
    # The local stack's state directory (`make up`): pid files, logs, demo credentials.
    state_dir: Path | None = None

    # The application's login (role agritrace_app: reads and writes rows, owns nothing).
    database_url: str = "postgresql://agritrace_app@127.0.0.1:55432/agritrace"
    # The owner role, on the same server and database: migrations and scratch databases only
    # (`agritrace db migrate`); long-running processes never need it. Without a password the
    # application's login is used for everything (a single-role setup).
    database_owner_user: str = "agritrace"
    database_owner_password: SecretStr | None = None
    # A login that may create roles (CREATEROLE), for `agritrace dashboards reader` only.
    database_roles_url: SecretStr | None = None
    # The Grafana reader's password for `agritrace dashboards reader` (generated when unset).
    grafana_db_password: SecretStr | None = None
    database_pool_min: int = Field(default=2, ge=1)
    database_pool_max: int = Field(default=10, ge=1)

    # The broker's plaintext listener, for the platform's own processes: loopback locally, the
    # containers' network in compose (deploy/mosquitto/mosquitto.conf.in).
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    # The broker's TLS listener, the gateways' way in (8883 in compose).
    mqtt_tls_port: int = Field(default=18831, ge=1, le=65535)
    # The CA certificate (PEM) gateways verify the broker with, handed out with their credentials;
    # unset when the broker's certificate is from a CA the gateways already trust.
    mqtt_tls_ca_file: Path | None = None
    # Host and TLS port that gateways are told to use (may differ from how the server reaches the
    # broker; the host must be in the broker certificate's subjectAltName). Port default: mqtt_tls_port.
    mqtt_public_host: str | None = None
    mqtt_public_port: int | None = None
    # The broker's dynamic-security admin, used to provision gateway clients.
    mqtt_admin_username: str = "agritrace-admin"
    mqtt_admin_password: SecretStr = SecretStr("local")
    # The ingest workers' broker accounts: worker N logs in as `{ingest_client_prefix}-N`, which is
    # also the only client id the broker lets it use; they share this password.
    mqtt_ingest_password: SecretStr = SecretStr("local")
    # The alert publisher's own account (publishes alert topics, nothing else).
    mqtt_alerts_username: str = "agritrace-alerts"
    mqtt_alerts_password: SecretStr = SecretStr("local")
    # The audit checkpoint publisher's account (publishes the retained checkpoint, nothing else).
    mqtt_audit_username: str = "agritrace-audit"
    mqtt_audit_password: SecretStr = SecretStr("local")

    # Signed audit checkpoints (core/checkpoint.py): the Ed25519 key (kept outside the database;
    # default: <state_dir>/audit/signing.key) and where checkpoints are written (default:
    # <state_dir>/audit/checkpoints).
    audit_signing_key: Path | None = None
    audit_checkpoint_dir: Path | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # `agritrace api run` writes one JSON line per request to stderr (api/protection.py: AccessLog).
    access_log: bool = True
    # Base URL printed into QR codes and links ("https://trace.example.cn").
    public_base_url: str = "http://127.0.0.1:8000"

    # Pepper for API token hashes; tokens are random, so this only guards a stolen table.
    token_pepper: SecretStr = SecretStr("local")

    # Unauthenticated public endpoints: rate-limited per client address (per API process) and
    # cacheable by shared caches. Consumer page, trace JSON, GS1 Digital Link.
    public_path_prefixes: list[str] = ["/t/", "/api/v1/trace/", "/01/"]
    public_rate_per_minute: float = Field(default=120, gt=0)
    public_rate_burst: int = Field(default=30, ge=1)
    public_cache_seconds: int = Field(default=300, ge=0)
    # Every route declared public (`openapi_extra={"security": []}`: QR images, /healthz) shares
    # that limit too. Label sheets are limited per token as well (each costs seconds of CPU).
    labels_rate_per_minute: float = Field(default=6, gt=0)
    labels_rate_burst: int = Field(default=3, ge=1)
    # Failed authentications (a token presented that is unknown, expired or revoked) per client
    # address: past the burst, further failing attempts get 429 with Retry-After until the bucket
    # refills at this rate. A valid token from the same address is never refused (a NAT may hide
    # many users, and the attacker's guesses are hopeless against 256-bit tokens anyway).
    auth_failures_per_minute: float = Field(default=6, gt=0)
    auth_failures_burst: int = Field(default=10, ge=1)
    # Consumer-page views run at once per API process (the others wait their turn, first come first
    # served). With the database on the same host a view is nearly all CPU: more threads than one
    # only share the GIL and stretch the slowest response (bench/trace_page.py at full size, 2 API
    # processes on 2 cores: 40 threads 789 req/s p99 181 ms; 4: 859 req/s, 92 ms; 2: 1,159-1,221
    # req/s, 49-56 ms; 1: 1,204 req/s, 42 ms). Scale with API processes; raise this when the
    # database is remote and round trips, not CPU, bound a view.
    public_page_threads: int = Field(default=1, ge=1)
    # Cold-chain webhooks must be https and reach only public addresses: every address the host
    # resolves to is checked when the webhook is registered and again before each call, which then
    # connects to the address it checked (so DNS rebinding cannot point it at this network). An
    # operator may allow plain http and private, loopback or link-local targets (a receiver on the
    # same LAN, tests): it is a server setting, not something an API caller can choose.
    webhook_allow_private_targets: bool = False
    # Product codes: at most this many issued by one request (422 beyond) and held by one batch
    # (409 beyond: a lot of 100,000 boxes is already large). A label sheet (PDF, 24 labels per A4
    # page) holds at most `labels_per_sheet_max` labels (1,200: 50 pages, ~7 s of one core, 2.5 MB);
    # larger batches are printed sheet by sheet with ?start=&count=.
    codes_per_request_max: int = Field(default=10_000, ge=1)
    codes_per_batch_max: int = Field(default=100_000, ge=1)
    labels_per_sheet_max: int = Field(default=1_200, ge=24)
    # Largest request body accepted (413 beyond it).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Ingest workers (issue 3). The shared-subscription group and client-id prefix are settings so
    # tests and benchmarks can run their own workers on the shared broker without stealing messages.
    ingest_group: str = "ingest"
    ingest_client_prefix: str = "agritrace-ingest"
    ingest_workers: int = Field(default=2, ge=1, le=64)  # broker accounts `broker setup` provisions
    ingest_session_expiry: int = Field(default=86400, ge=0)  # seconds the broker queues for a gone worker
    ingest_receive_maximum: int = Field(default=4000, ge=1, le=65535)  # in-flight QoS 1 messages per worker
    ingest_batch_readings: int = Field(default=20000, ge=1)  # flush when a batch holds this many readings
    ingest_flush_interval: float = Field(default=0.2, gt=0)  # ... or when its oldest message is this old
    ingest_metrics_port: int = Field(default=9310, ge=0)  # worker N serves metrics on port + N - 1; 0 = off
    ingest_max_age_days: float = Field(default=30, gt=0)  # older readings are dead-lettered
    ingest_retention_days: int = Field(default=3 * 365, ge=1)  # raw readings are dropped after this
    ingest_retention_interval: float = Field(default=3600, ge=0)  # how often worker 1 enforces it; 0 = never
    ingest_dead_letter_days: int = Field(default=90, ge=1)  # dead letters are deleted after this

    # The consumer page's "possibly counterfeit" flag: a code scanned from more than
    # `counterfeit_networks` distinct client networks (/24, /48) within `counterfeit_window_hours`.
    # Scans by staff (a valid API token), link-preview bots and the operator's own networks
    # (`counterfeit_ignore_networks`, CIDRs: where labels are printed and checked) do not count.
    counterfeit_networks: int = Field(default=5, ge=1)
    counterfeit_window_hours: int = Field(default=24, ge=1, le=24 * 90)
    counterfeit_ignore_networks: list[str] = []

    # A whole batch's label sheet made in the background (POST /api/v1/batches/{id}/label-jobs)
    # holds at most `labels_per_job_max` labels.
    labels_per_job_max: int = Field(default=10000, ge=1)

    @field_validator("counterfeit_ignore_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v, strict=False)) for v in value]

    @model_validator(mode="after")
    def _service_accounts_in_reserved_namespace(self) -> Settings:
        # Gateway ids can never start with "agritrace", so accounts named so cannot be claimed by one.
        for name in (
            "mqtt_admin_username",
            "mqtt_alerts_username",
            "mqtt_audit_username",
            "ingest_client_prefix",
        ):
            if not getattr(self, name).startswith("agritrace-"):
                raise ValueError(
                    f"AGRITRACE_{name.upper()} must start with 'agritrace-' (the reserved namespace)"
                )
        return self

    @model_validator(mode="after")
    def _refuse_placeholders_outside_local(self) -> Settings:
        if self.mode == "local":
            return self
        unsafe = [
            name
            for name in (
                "mqtt_admin_password",
                "mqtt_ingest_password",
                "mqtt_alerts_password",
                "mqtt_audit_password",
                "token_pepper",
            )
            if getattr(self, name).get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ]
        if unsafe:
            names = ", ".join("AGRITRACE_" + n.upper() for n in unsafe)
            raise ValueError(f"placeholder secrets are refused in {self.mode} mode: set {names}")
        return self

    @property
    def gateway_mqtt_host(self) -> str:
        return self.mqtt_public_host or self.mqtt_host

    @property
    def gateway_mqtt_port(self) -> int:
        return self.mqtt_public_port or self.mqtt_tls_port

    def _audit_path(self, given: Path | None, setting: str, name: str) -> Path:
        if given is not None:
            return given
        if self.state_dir is None:
            raise ValueError(f"set AGRITRACE_{setting.upper()} (or AGRITRACE_STATE_DIR)")
        return self.state_dir / "audit" / name

    @property
    def audit_signing_key_path(self) -> Path:
        return self._audit_path(self.audit_signing_key, "audit_signing_key", "signing.key")

    @property
    def audit_checkpoint_path(self) -> Path:
        return self._audit_path(self.audit_checkpoint_dir, "audit_checkpoint_dir", "checkpoints")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Loads settings once per process (environment first, then the local env file)."""
    env_file = _env_file()
    return Settings(_env_file=env_file if env_file.is_file() else None)
