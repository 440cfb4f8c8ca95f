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


def test_mllp_send_prints_each_ack(tmp_path, capsys):
    from tests.hl7v2.kit import DATA
    from tests.mllp.kit import listening

    good = DATA / "nist-lri-gu-002-cbc.hl7"
    bad = tmp_path / "adt.hl7"
    bad.write_bytes((DATA / "hl7apy-adt-a01.hl7").read_bytes())
    with listening() as server:
        host, port = server.address
        assert cli.main(["mllp", "send", str(good), "--to", f"{host}:{port}"]) == 0
        assert f"{good}: AA NIST-LRI-GU-002.00" in capsys.readouterr().out
        assert cli.main(["mllp", "send", str(good), str(bad), "--to", f"{host}:{port}"]) == 5
        out = capsys.readouterr().out
        assert f"{bad}: AR 0123456789" in out


@pytest.mark.parametrize(
    ("argv", "code", "word"),
    [
        (["mllp", "send", "x.hl7"], 2, "--to"),
        (["mllp", "send", "x.hl7", "--to", "nohost"], 2, "HOST:PORT"),
        (["mllp", "send", "{tmp}/missing.hl7", "--to", "127.0.0.1:9"], 4, "missing.hl7"),
    ],
)
def test_mllp_send_bad_arguments(argv, code, word, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert word in err and "Traceback" not in err
