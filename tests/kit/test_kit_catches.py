"""The kit can fail: each defective driver of kit_cases.py must fail the checks its
defect concerns, with a message that names the problem. Runs kit_cases.py in a pytest
subprocess (the kit's checks are pytest tests themselves)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("hafence_example_pdu", reason="pip install -e plugins/hafence-example-pdu")

HERE = Path(__file__).resolve().parent

# class -> {check that must fail: words its failure message must contain}
EXPECTED: dict[str, dict[str, str]] = {
    "TestLeakyError": {"test_wrong_credentials": "a secret value shows in errors"},
    "TestLeakyLog": {"test_status": "a secret value shows in logs"},
    "TestLeakyRepr": {"test_secrets_masked": "a secret value shows in driver repr"},
    "TestWrongError": {"test_wrong_credentials": "expected AuthError, got DeviceError"},
    "TestRawOSError": {"test_unreachable_times_out": "got TimeoutError"},
    "TestNoTimeout": {"test_unreachable_times_out": "timeout"},
    "TestBlocking": {"test_status": "the event loop was blocked"},
    "TestLyingOff": {
        "test_off_confirmed_and_idempotent": "still_on",
        "test_fence_through_fence_cfg": "still_on",
    },
    "TestCachedStatus": {"test_off_confirmed_and_idempotent": "the device says 'on'"},
    "TestBadList": {"test_list": "is not a Port"},
    "TestNoHelp": {
        "test_metadata_json": "'vendor_mode' has no help",
        "test_metadata_xml": "'vendor_mode': no shortdesc",
    },
    "TestSecretDefault": {"test_param_schema": "secret 'api_key' has a default"},
    "TestAliasClash": {"test_param_schema": "'ipaddr' names both 'ip' and 'community'"},
    "TestRequiredLoose": {"test_required_params_enforced": "DID NOT RAISE"},
    "TestPortMisuse": {"test_standard_params": "'port' is the standard name of 'plug'"},
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[str, str]]:
    report = tmp_path_factory.mktemp("kit") / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={report}", str(HERE / "kit_cases.py")],
        capture_output=True, text=True, timeout=600, cwd=HERE.parent.parent,
    )  # fmt: skip
    assert report.exists(), proc.stdout + proc.stderr
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for case in ET.parse(report).iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        result, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                result = tag
                message = (el.get("message") or "") + "\n" + (el.text or "")
        out[(cls, case.get("name", ""))] = (result, message)
    return out


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_defect_is_caught(case: str, outcomes: dict[tuple[str, str], tuple[str, str]]) -> None:
    ran = {name: res for (cls, name), res in outcomes.items() if cls == case}
    assert ran, f"{case} did not run"
    for check, words in EXPECTED[case].items():
        result, message = ran[check]
        assert result == "failure", f"{case}.{check}: {result}, expected a failure"
        assert words in message, f"{case}.{check} failed for another reason:\n{message}"
    errors = {n: m for n, (r, m) in ran.items() if r == "error"}
    assert not errors, f"{case}: fixture errors {errors}"
