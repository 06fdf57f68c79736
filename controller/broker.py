"""The MQTT broker settings every ilma service shares, and how to connect with them.

Credentials never live in a config file: a `Secret` names the environment variable or file
that holds them. TLS (and mutual TLS with a client certificate) is a setting, not code.
"""

from __future__ import annotations

import os
import random
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from sensors.config import ConfigError, ConfigProblem, FrozenModel

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Secret(FrozenModel):
    """Where a secret comes from: never the config file itself."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        return self

    def read(self) -> str:
        """The secret's value (stripped of a trailing newline), or ConfigError saying where."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError([ConfigProblem("environment", self.env, "is not set")])
            return value
        assert self.file is not None  # noqa: S101  (the validator guarantees one source)
        try:
            return self.file.read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise ConfigError(
                [ConfigProblem(str(self.file), "", f"cannot read secret: {exc.strerror}")]
            ) from exc


class Broker(FrozenModel):
    """[broker]: the central MQTT broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="default: derived from the service name")
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    key_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: Positive = 1.0
    reconnect_max_s: Positive = 60.0

    @model_validator(mode="after")
    def _backoff_range(self) -> Broker:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


def tls_context(b: Broker) -> ssl.SSLContext | None:
    """The TLS context for the broker (None without TLS): its CA, and our certificate for
    mutual TLS."""
    if not b.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(b.ca_file) if b.ca_file else None)
    if b.cert_file is not None:
        ctx.load_cert_chain(str(b.cert_file), str(b.key_file) if b.key_file else None)
    return ctx


def backoff_s(b: Broker, failures: int, rng: random.Random) -> float:
    """Seconds before the next connection attempt: capped exponential, jittered so that a
    building's gateways do not all knock at once after the broker returns."""
    cap = min(b.reconnect_max_s, b.reconnect_min_s * 2.0 ** min(failures, 30))
    return rng.uniform(b.reconnect_min_s, max(cap, b.reconnect_min_s))
