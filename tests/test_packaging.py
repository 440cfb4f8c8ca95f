"""`pip install .` works outside the checkout: mappings, profiles and demo data are in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_data_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("rems_adapter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "adapter/mappings/protocol.toml",
        "adapter/mappings/units.toml",
        "adapter/profiles/CodeSystem-finding.json",
        "adapter/demo/data/demo.ndjson",
        "adapter/store/migrations/0001_initial.sql",
    ):
        assert needed in names
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    located = subprocess.run(
        [sys.executable, "-c", "import adapter; print(adapter.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert located.stdout.strip().startswith(str(site))
    out = elsewhere / "out"
    demo = subprocess.run(
        [sys.executable, "-m", "adapter", "demo", "--out", str(out)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "not-authorized" in demo.stdout
    assert (out / "status.ndjson").read_text().count("\n") >= 20
