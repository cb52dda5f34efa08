"""Fixtures for the controller's unit tests (the stand-ins live in `fakes`)."""

from tests.unit.controller.fakes import events, probes  # noqa: F401 - fixtures
