"""`serve --mllp` refuses what it cannot run, with one line and exit 3, before it opens or
contacts anything; `rems-adapter mllp` with an unknown action is a usage error."""

from __future__ import annotations

import pytest

from adapter import cli


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--mllp", "127.0.0.1:0"], {}, ["mllp.assigning_authority"]),
        (["--mllp", "10.0.0.1:2575"], {"AUTHORITY": "X"}, ["--mllp", "loopback"]),
        (["--mllp", "nohost"], {"AUTHORITY": "X"}, ["--mllp", "HOST:PORT"]),
        (["--mllp", "127.0.0.1:0"], {"AUTHORITY": "X", "MAX_CONNECTIONS": "0"}, ["MAX_CONN"]),
    ],
)
def test_serve_mllp_settings_are_checked_first(argv, env, words, tmp_path, monkeypatch, capsys):
    for name, value in env.items():
        key = "ASSIGNING_AUTHORITY" if name == "AUTHORITY" else name
        monkeypatch.setenv(f"REMS_ADAPTER_MLLP_{key}", value)
    state = tmp_path / "state.sqlite"
    code = cli.main(
        ["serve", "--fhir-base", "http://127.0.0.1:9/fhir", "--state", str(state), *argv]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err
    for word in words:
        assert word in err
    assert not state.exists()  # nothing opened


def test_mllp_knows_its_actions(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["mllp", "frobnicate"])
    assert caught.value.code == 2
