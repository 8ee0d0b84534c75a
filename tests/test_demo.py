"""`make run` runs `python -m pynetmon demo`: it must count exactly what it sends, and leave nothing behind."""
import json
import subprocess
import sys

from pynetmon.testing import require_bpf


def test_demo_counts_every_datagram_and_cleans_up():
    require_bpf()
    proc = subprocess.Popen([sys.executable, "-m", "pynetmon", "demo", "--json", "--count", "250"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    metrics = json.loads(stdout)
    ingress = {m["name"]: m["value"] for m in metrics["ingress-metrics"]}
    egress = {m["name"]: m["value"] for m in metrics["egress-metrics"]}
    per_protocol = {e["key"]: e["value"] for e in ingress["ingress_ip_protocols"]}
    assert per_protocol[17] == {"packets": 250, "bytes": 250 * (14 + 20 + 8 + 64)}  # UDP: exactly what was sent
    assert per_protocol[1]["packets"] == 3                                         # the 3 ping replies
    assert ingress["ingress_packets"][0] >= 253
    assert {e["key"]: e["value"] for e in egress["egress_ip_protocols"]}[1]["packets"] >= 3  # the pings
    # the demo's test hosts are gone (named by its pid, as TestHosts names them; other processes'
    # namespaces may come and go meanwhile, so only the demo's own are looked for)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    mine = f"demo{proc.pid % 100000}x"
    assert [line for line in left.splitlines() if line.startswith(mine)] == []
