"""The OpenAPI document holds: a bounded Schemathesis run against the real service finds nothing.

Schemathesis (the [test] extra) generates requests from /docs.json, valid and invalid,
and checks every answer: no 5xx, every status documented, every body matching its
schema, invalid data rejected. One check is left out: ``positive_data_acceptance``
expects any schema-valid request to succeed, and OpenAPI cannot say that the binary
``images`` must be real images (random bytes are rightly refused with 400).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow  # ~300 generated requests: 30-90 s on a busy machine


def test_detect_documents_its_form_fields_and_errors(service):
    spec = requests.get(service.url + "/docs.json", timeout=30).json()
    detect = spec["paths"]["/detect"]["post"]
    form = detect["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"images", "conf", "iou", "max_det", "classes", "budgets_s"}
    assert form["properties"]["classes"]["items"]["maximum"] == 79  # the served model's classes
    assert {"200", "400", "408", "413", "415", "429", "503"} <= set(detect["responses"])
    assert spec["paths"]["/metadata"]["get"]["responses"]["200"]


def test_schemathesis_finds_no_server_error_and_no_mismatch(service, tmp_path):
    cli = Path(sys.executable).parent / "schemathesis"
    cmd = [str(cli), "run", service.url + "/docs.json", "--url", service.url, "--max-examples", "40", "--seed", "7",
           "--exclude-checks", "positive_data_acceptance", "--workers", "1", "--no-color",
           "--generation-database", "none"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCHEMATHESIS_HOOKS": ""})
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "No issues found" in out and "passed" in out, out[-3000:]
