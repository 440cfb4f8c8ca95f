"""mappings/ is validated on load, with errors that name the file and the entry."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from adapter.mappings_loader import MappingError, load_reference_data

SOURCE = Path(str(resources.files("adapter.mappings")))


@pytest.fixture
def mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(SOURCE, target)
    return target


def _edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    text = path.read_text()
    assert old in text, f"fixture drift: {old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


def test_bundled_mappings_load_and_carry_sources():
    data = load_reference_data()
    assert data.protocol.general.bands[0].min == 1500
    assert data.finding_system.startswith("https://")
    for path in SOURCE.glob("*.toml"):
        text = path.read_text()
        assert "source =" in text and "effective =" in text, path.name


@pytest.mark.parametrize(
    ("file", "old", "new", "entry"),
    [
        (
            "protocol.toml",
            'min = 1000\ntreatment = "continue"\nfrequency = "three-times-weekly"',
            'min = 1600\ntreatment = "continue"\nfrequency = "three-times-weekly"',
            "population.general.band[1]",
        ),
        (
            "protocol.toml",
            'min = 0\ntreatment = "interrupt"',
            'min = 10\ntreatment = "interrupt"',
            "population.general.band[3].min",
        ),
        (
            "protocol.toml",
            'category = "mild-neutropenia"',
            'category = "mildish"',
            "population.general.band[1].category",
        ),
        (
            "protocol.toml",
            'frequency = "every-2-weeks"\n\n[[normal_schedule]]',
            'frequency = "fortnightly"\n\n[[normal_schedule]]',
            "normal_schedule[1].frequency",
        ),
        ("protocol.toml", "from_month = 12", "from_month = 5", "normal_schedule[2].from_month"),
        (
            "protocol.toml",
            'interruption_comparator = ">="',
            'interruption_comparator = "=>"',
            "timing.interruption_comparator",
        ),
        ("protocol.toml", "grace_days = 2", "grace_days = -2", "timing.grace_days"),
        ("units.toml", '"K/uL" = 1000', '"K/uL" = 0', "alias.K/uL"),
        ("lab-codes.toml", '"769-0"', '"770-8"', "segs_pct.770-8"),
        ("dispense.toml", 'codes = ["inpatient"', 'codes = ["ward"', "category.codes.ward"),
        ("protocol.toml", 'effective = "2015-09-15"', "", "meta"),
    ],
)
def test_bad_mappings_are_refused_naming_file_and_entry(mappings, file, old, new, entry):
    _edit(mappings, file, old, new)
    with pytest.raises(MappingError) as raised:
        load_reference_data(mappings)
    assert raised.value.file == str(mappings / file)  # the site's own file, not ours
    assert raised.value.entry == entry
    assert f"mappings/{file}: {entry}:" in str(raised.value)


def test_unreadable_toml_names_the_file(mappings):
    (mappings / "units.toml").write_text("[ucum\n")
    with pytest.raises(MappingError, match=r"mappings/units\.toml: syntax"):
        load_reference_data(mappings)


def test_a_site_can_change_a_threshold_through_data(mappings):
    _edit(mappings, "protocol.toml", "grace_days = 2", "grace_days = 5")
    assert load_reference_data(mappings).protocol.timing.grace_days == 5


def test_a_partial_mappings_folder_overlays_the_bundled_one(tmp_path: Path) -> None:
    """A site folder holding one file uses the bundled copies of the others; an error in the
    site's file names that file, and a file that is not a mappings file is refused."""
    bundled = Path(__file__).parent.parent / "mappings"
    site = tmp_path / "site"
    site.mkdir()
    (site / "clozapine.toml").write_text(
        (bundled / "clozapine.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    data = load_reference_data(site)
    assert data.protocol == load_reference_data().protocol

    (site / "clozapine.toml").write_text("[meta\n", encoding="utf-8")
    with pytest.raises(MappingError) as raised:
        load_reference_data(site)
    assert raised.value.file == str(site / "clozapine.toml")

    (site / "clozapine.toml").write_text(
        (bundled / "clozapine.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (site / "unit.toml").write_text("", encoding="utf-8")  # a misspelt name is not ignored
    with pytest.raises(MappingError, match=r"unit\.toml: file: not a mappings file"):
        load_reference_data(site)

    for entry in site.iterdir():
        entry.unlink()
    with pytest.raises(MappingError, match="holds none of the mappings files"):
        load_reference_data(site)  # an empty folder is surely the wrong folder
