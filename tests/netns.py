"""Another machine, for real: a network namespace joined to this one by a veth pair (root and
iproute2). Used by the multi-host tests and by the upstream-on-a-GPU-host test."""
import os
import shutil
import subprocess


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class VethPair:
    """A namespace `ns` joined to this one by a veth pair: main <-> worker addresses."""

    def __init__(self, net: int = 0):
        """`net` (0-3) tells apart pairs that one test run has up at the same time."""
        tag = os.getpid() % 10000
        self.ns, self.a, self.b = f"fleet-ns-{tag}-{net}", f"fl{tag}{net}a", f"fl{tag}{net}b"
        # a subnet of its own per test process (pytest-xdist runs two at once), and per pair within one
        sub = 100 + os.getpid() % 150
        self.main_ip, self.worker_ip, self.stranger_ip = (f"10.{sub}.{net}.{host}" for host in (1, 2, 3))

    def __enter__(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.a, "type", "veth", "peer", "name", self.b)
        sh("ip", "link", "set", self.b, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.main_ip}/24", "dev", self.a)
        sh("ip", "addr", "add", f"{self.stranger_ip}/24", "dev", self.a)  # a third machine on the network
        sh("ip", "link", "set", self.a, "up")
        for cmd in (("ip", "addr", "add", f"{self.worker_ip}/24", "dev", self.b), ("ip", "link", "set", self.b, "up"),
                    ("ip", "link", "set", "lo", "up")):
            sh("ip", "netns", "exec", self.ns, *cmd)
        return self

    def link(self, up: bool) -> None:
        sh("ip", "link", "set", self.a, "up" if up else "down")

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.a], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def namespaces_work() -> str | None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return "needs root and iproute2 to create network namespaces"
    probe = f"fleet-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create network namespaces here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None
