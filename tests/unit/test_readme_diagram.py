"""The README's diagram draws the topics each service consumes and publishes as its event contract declares them:
drawn by hand, it fell behind the contract (disputes, reversals, external refunds, commands were missing)."""

from __future__ import annotations

import re
from pathlib import Path

from refundflow_shared.event_contract import CONTRACTS
from refundflow_shared.events import EventType

README = Path(__file__).resolve().parents[2] / "README.md"
PLATFORM = "billing"
# `who --- who_publishes["a<br/>b"] --> K` and `K --> who_consumes["a<br/>b"] --> who`: each list its own box.
_PUBLISHES = re.compile(r"^\s*(\w+)(?:\(\[[^\]]*\]\))?\s*---\s*(\w+)_publishes\[\"([^\"]*)\"\]\s*-->\s*K\b")
_CONSUMES = re.compile(r"^\s*K\s*-->\s*(\w+)_consumes\[\"([^\"]*)\"\]\s*-->\s*(\w+)\s*$")


def drawn() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What the diagram says each party publishes to the broker, and consumes from it."""
    (diagram,) = re.findall(r"```mermaid\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    publishes: dict[str, set[str]] = {}
    consumes: dict[str, set[str]] = {}
    for line in diagram.splitlines():
        if found := _PUBLISHES.match(line):
            assert found.group(1) == found.group(2), line
            publishes[found.group(1)] = set(found.group(3).split("<br/>"))
        elif found := _CONSUMES.match(line):
            assert found.group(1) == found.group(3), line
            consumes[found.group(1)] = set(found.group(2).split("<br/>"))
        elif not line.lstrip().startswith("class"):  # the boxes' style
            assert "_publishes" not in line and "_consumes" not in line, f"a list of topics not drawn as one: {line}"
    return publishes, consumes


def test_the_diagram_draws_each_services_topics_as_its_contract_declares_them() -> None:
    publishes, consumes = drawn()
    for service, contract in CONTRACTS.items():
        assert consumes.get(service) == {t.value for t in contract.consumes}, f"what {service} consumes"
        assert publishes.get(service) == {t.value for t in contract.publishes}, f"what {service} publishes"


def test_the_platforms_topics_are_event_types_and_all_that_no_service_publishes_comes_from_it() -> None:
    publishes, consumes = drawn()
    assert set(publishes) | set(consumes) <= {*CONTRACTS, PLATFORM}
    platform = publishes.get(PLATFORM, set()) | consumes.get(PLATFORM, set())
    assert platform <= {t.value for t in EventType}, platform - {t.value for t in EventType}
    consumed = {t.value for contract in CONTRACTS.values() for t in contract.consumes}
    published = {t.value for contract in CONTRACTS.values() for t in contract.publishes}
    assert consumed - published <= publishes.get(PLATFORM, set()), "a topic consumed that no one is drawn publishing"
