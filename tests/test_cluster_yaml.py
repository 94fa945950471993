"""ray_cluster.yaml is a valid cluster-launcher file that installs this project and keeps the dashboard private."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_rays_schema():
    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    full = prepare_config(cfg)
    validate_config(full)
    assert full["head_node_type"] in full["available_node_types"]
    assert any(nt != full["head_node_type"] for nt in full["available_node_types"])  # a worker type exists


def test_cluster_installs_the_project_and_binds_the_dashboard_locally():
    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    setup = " ".join(cfg["setup_commands"])
    assert "requirements.txt -c constraints.txt" in setup and "-e ." in setup
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
