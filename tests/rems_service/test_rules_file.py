"""The program rules file (rems-server --rules): every bad value names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.rems_service.config import ConfigError, load_rules

PROGRAM = (Path(__file__).parent.parent.parent / "mappings" / "rems-program.toml").read_text(
    encoding="utf-8"
)


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("override_limit = 3", 'override_limit = "three"', "[override.override_limit] must"),
        ("psf_window_days = 37", "psf_window_days = -1", "[psf.psf_window_days] must be a whole"),
        ("psf_window_days = 37", "psf_window_days = 3.5", "[psf.psf_window_days] must be a whole"),
        ("rationale_anc_below_ben = 500", "rationale_anc_below_ben = -5", "must be a number >= 0"),
        ("accept_as_of = false", "accept_as_of = 1", "[api.accept_as_of] must be true or false"),
        ('time_zone = "UTC"', 'time_zone = "Mars/Base"', "[clock.time_zone] must be an IANA"),
        ('\nmode = "fixed"', '\nmode = "loose"', "[discharge.mode] must be one of"),
        ('limit_applies_to = ["outpatient"]', 'limit_applies_to = ["all"]', "inpatient"),
        ('effective = "2021-11-15"', 'effective = "soon"', "[meta.effective] must be a YYYY-MM-DD"),
        ("[enrollment]", "[enrolment]", "missing [enrollment]"),
        ("monthly = 30\n\n[discharge]", "\n[discharge]", "missing [monitoring_interval_days.mon"),
        ("weekly = 7\nevery-2-weeks = 14\nmonthly = 30\n\n[discharge]",
         "weekly = 7\nevery-2-weeks = 14\nmonthly = 30\ndaily = 1\n\n[discharge]",
         "[monitoring_interval_days.daily] must be a table with exactly"),
        ("[api]\n", "[api]\naccept_asof = true\n", "[api.accept_asof] must be a known key"),
    ],
)  # fmt: skip
def test_a_bad_value_names_file_and_key(tmp_path: Path, old: str, new: str, says: str) -> None:
    assert old in PROGRAM
    program = tmp_path / "program.toml"
    program.write_text(PROGRAM.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_rules(program)
    assert str(raised.value).startswith(f"{program}: ")
    assert says in str(raised.value)


def test_an_unreadable_rules_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.toml")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_rules(tmp_path / "binary.toml")
