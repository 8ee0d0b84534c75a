"""`make run` runs `python -m pynetmon demo`: it must count exactly what it sends, and leave nothing behind."""
import json
import subprocess
import sys

from pynetmon.testing import require_bpf


def test_demo_counts_every_datagram_and_cleans_up():
    require_bpf()
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    out = subprocess.run([sys.executable, "-m", "pynetmon", "demo", "--json", "--count", "250"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    ingress = {m["name"]: m["value"] for m in metrics["ingress-metrics"]}
    egress = {m["name"]: m["value"] for m in metrics["egress-metrics"]}
    per_protocol = {e["key"]: e["value"] for e in ingress["ingress_ip_protocols"]}
    assert per_protocol[17] == {"packets": 250, "bytes": 250 * (14 + 20 + 8 + 64)}  # UDP: exactly what was sent
    assert per_protocol[1]["packets"] == 3                                         # the 3 ping replies
    assert ingress["ingress_packets"][0] >= 253
    assert {e["key"]: e["value"] for e in egress["egress_ip_protocols"]}[1]["packets"] >= 3  # the pings
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert after == before  # the test hosts are gone
