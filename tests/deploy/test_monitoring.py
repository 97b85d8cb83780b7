"""The Prometheus scrape config rendered from an inventory by playbooks/prometheus-config.yml,
and the rendered flowsched.cfg's metrics section."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import HERE, REPO, ansible_env, tool


def render_scrape_config(tmp_path: Path, *extra: str) -> dict:
    dest = tmp_path / "scrape.yml"
    result = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            str(HERE / "inventories" / "gmt8"),
            str(REPO / "playbooks" / "prometheus-config.yml"),
            "-e",
            f"flowsched_prometheus_scrape_dest={dest}",
            *extra,
        ],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return yaml.safe_load(dest.read_text())


def targets(config: dict) -> dict[str, dict[str, str]]:
    """{job: {host label: target}}"""
    return {
        job["job_name"]: {
            group["labels"]["host"]: target
            for group in job["static_configs"]
            for target in group["targets"]
        }
        for job in config["scrape_configs"]
    }


def test_scrape_config_lists_every_component_at_its_cluster_address(tmp_path: Path) -> None:
    found = targets(render_scrape_config(tmp_path, "-e", "flowsched_metrics_worker_port=9200"))
    assert found == {
        "flowsched_scheduler": {"master1": "10.77.0.21:9110"},
        "flowsched_dag_processor": {"master1": "10.77.0.21:9111"},
        "flowsched_worker": {"worker1": "10.77.0.31:9200", "worker2": "10.77.0.32:9200"},
        "flowsched_webserver": {"master1": "10.77.0.21:9113"},
    }


def test_metrics_off_leaves_no_target(tmp_path: Path) -> None:
    config = render_scrape_config(tmp_path, "-e", "flowsched_metrics_enabled=false")
    assert all(job["static_configs"] == [] for job in config["scrape_configs"])


def schemes(config: dict) -> dict[str, tuple[str, str | None]]:
    """{job: (scheme, CA file)}"""
    return {
        job["job_name"]: (job["scheme"], job.get("tls_config", {}).get("ca_file"))
        for job in config["scrape_configs"]
    }


def test_https_ports_are_scraped_over_tls_against_the_cluster_ca(tmp_path: Path) -> None:
    """Under TLS the webserver's metrics port (a gunicorn listener) serves https: its job
    checks it against the CA; the prometheus_client ports of the others serve plain HTTP."""
    config = render_scrape_config(tmp_path, "-e", "flowsched_prometheus_ca_file=/etc/prom/ca.pem")
    assert schemes(config) == {
        "flowsched_scheduler": ("http", None),
        "flowsched_dag_processor": ("http", None),
        "flowsched_worker": ("http", None),
        "flowsched_webserver": ("https", "/etc/prom/ca.pem"),
    }


def test_without_tls_every_job_is_plain_http(tmp_path: Path) -> None:
    config = render_scrape_config(tmp_path, "-e", "flowsched_tls_enabled=false")
    assert set(schemes(config).values()) == {("http", None)}
