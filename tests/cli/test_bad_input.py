"""Bad command lines end in one line naming what was wrong and exit status 1 — never a traceback."""
from __future__ import annotations

import pytest

from pynetmon.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command", [["extract", "m1"], ["top", "--once"], ["inject", "m1", "lo", "{cfg}"]])
def test_malformed_daemon_address_is_named(capsys, tmp_path, command):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"name": "x", "code": "", "metric-configs": []}')
    argv = [arg.format(cfg=cfg) for arg in command] + ["-a", "bad host"]
    status, err = run_cli(capsys, *argv)
    assert status == 1
    assert "bad daemon address" in err and "bad host" in err


def test_capture_client_nonnumeric_port_is_named(capsys, tmp_path):
    status, err = run_cli(capsys, "capture-client", "http://127.0.0.1:abc/stream", str(tmp_path / "x.pcap"))
    assert status == 1
    assert "bad URL 'http://127.0.0.1:abc/stream'" in err and "abc" in err


def test_capture_client_reads_the_token_file(capsys, tmp_path):
    status, err = run_cli(capsys, "capture-client", "--token-file", str(tmp_path / "missing"),
                          "http://127.0.0.1:1/stream", str(tmp_path / "x.pcap"))
    assert status == 1
    assert "cannot read the token file" in err and "missing" in err


def test_serve_rejects_a_broken_state_file_before_listening(capsys, tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{broken")
    status, err = run_cli(capsys, "serve", "--listen", "127.0.0.1:0", "--state-file", str(state))
    assert status == 1
    assert err.startswith("pynetmon serve: --state-file:") and "is not JSON" in err


@pytest.mark.parametrize("count", ["0", "-1", "many"])
def test_demo_count_must_be_positive(capsys, count):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before any test host is made
        main(["demo", "-c", count])
    assert exit_info.value.code == 2
    assert f"must be a positive number of datagrams, not '{count}'" in capsys.readouterr().err


def test_serve_refuses_a_capture_dir_others_could_plant(capsys, tmp_path):
    anyone = tmp_path / "anyone"
    anyone.mkdir()
    anyone.chmod(0o777)
    status, err = run_cli(capsys, "serve", "--listen", "127.0.0.1:0", "--capture-dir", str(anyone))
    assert status == 1 and f"--capture-dir: '{anyone}' is writable by anyone" in err
    link = tmp_path / "link"
    link.symlink_to("/etc")
    status, err = run_cli(capsys, "serve", "--listen", "127.0.0.1:0", "--capture-dir", str(link))
    assert status == 1 and "a symlink is refused" in err


def test_monitor_flag_of_another_kind_or_bad_value_is_named(capsys):
    status, err = run_cli(capsys, "monitor", "flows", "-i", "lo", "--blacklist", "192.0.2.1", "60")
    assert status == 1 and "--blacklist" in err and "ddos monitor, not of flows" in err
    status, err = run_cli(capsys, "monitor", "ddos", "-i", "lo", "--blacklist", "192.0.2.1", "soon")
    assert status == 1 and "--blacklist 192.0.2.1 soon" in err and "SECONDS must be a number" in err
    status, err = run_cli(capsys, "monitor", "ddos", "-i", "lo", "--blacklist", "300.0.0.1", "5")
    assert status == 1 and "options.block[0].cidr" in err
