"""Failover notifications: Slack-compatible webhook, PagerDuty Events v2, SMTP email.

Engine-free. Each notifier is built from a stack-config notification plus
resolved secrets, sends one event, and raises `NotifyError` on failure; the
controller runs them off the probe loop and logs failures instead of stopping.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal, Protocol

Severity = Literal["critical", "warning", "info"]


class NotifyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Event:
    """One failover-relevant happening, e.g. aws went down."""

    kind: Literal["failure", "recovery", "fail-open", "fail-open-cleared"]
    record: str
    target: str  # a cloud, or "*" for the whole record
    summary: str
    severity: Severity
    details: dict[str, Any]

    @property
    def dedup_key(self) -> str:
        # failure and recovery of the same target share a key so PagerDuty resolves the incident.
        base = "fail-open" if self.kind.startswith("fail-open") else "target"
        return f"edgefabric/{self.record}/{base}/{self.target}"

    @property
    def resolves(self) -> bool:
        return self.kind in ("recovery", "fail-open-cleared")


class Notifier(Protocol):
    name: str

    def send(self, event: Event) -> None: ...


def _post_json(url: str, body: dict[str, Any], timeout_s: float) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"POST to webhook failed: {exc}") from exc


@dataclass
class SlackNotifier:
    url: str
    timeout_s: float = 5.0
    name: str = "slack"

    def send(self, event: Event) -> None:
        icon = {"critical": ":red_circle:", "warning": ":warning:", "info": ":large_green_circle:"}[event.severity]
        fields = "\n".join(f"*{k}*: {v}" for k, v in sorted(event.details.items()))
        _post_json(
            self.url,
            {
                "text": f"{icon} {event.summary}",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{event.summary}*"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": fields or "-"}},
                ],
                "edgefabric": {"kind": event.kind, "record": event.record, "target": event.target},
            },
            self.timeout_s,
        )

    def __repr__(self) -> str:
        return "SlackNotifier(url=***)"  # the webhook URL is a credential


@dataclass
class PagerDutyNotifier:
    routing_key: str
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = "edgefabric-failover-controller"
    timeout_s: float = 5.0
    name: str = "pagerduty"

    def send(self, event: Event) -> None:
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "resolve" if event.resolves else "trigger",
            "dedup_key": event.dedup_key,
        }
        if not event.resolves:
            body["payload"] = {
                "summary": event.summary[:1024],
                "source": self.source,
                "severity": event.severity,
                "component": event.target,
                "group": event.record,
                "class": event.kind,
                "custom_details": event.details,
            }
        _post_json(self.events_url, body, self.timeout_s)

    def __repr__(self) -> str:
        return f"PagerDutyNotifier(events_url={self.events_url!r}, routing_key=***)"


@dataclass
class EmailNotifier:
    smtp_host: str
    smtp_port: int
    sender: str
    recipients: list[str]
    starttls: bool = True
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    name: str = "email"

    def send(self, event: Event) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"[edgefabric] {event.summary}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        lines = [event.summary, ""] + [f"{k}: {v}" for k, v in sorted(event.details.items())]
        msg.set_content("\n".join(lines) + "\n")
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"SMTP to {self.smtp_host}:{self.smtp_port} failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"EmailNotifier(smtp={self.smtp_host}:{self.smtp_port}, to={self.recipients})"
