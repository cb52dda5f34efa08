"""The policy tier: every policy called directly, the pack over rendered stacks, the
delivery tooling (workflows, render, promote-check)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
