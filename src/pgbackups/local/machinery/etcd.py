"""A single-node etcd per cluster on loopback: Patroni's DCS (etcd3 API)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path


def argv(etcd: str, *, name: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        etcd,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--listen-metrics-urls", "",
    ]  # fmt: skip


def is_healthy(client_port: int, timeout: float = 1.0) -> bool:
    url = f"http://127.0.0.1:{client_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(data, dict) and str(data.get("health")) == "true"
