"""cluster.yaml passes Ray's own cluster-launcher validation and keeps the dashboard private."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load_cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation():
    config = prepare_config(load_cluster_config())
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]


def test_cluster_has_cpu_decode_and_gpu_training_nodes():
    node_types = load_cluster_config()["available_node_types"]
    gpu_nodes = [name for name, node in node_types.items() if node.get("resources", {}).get("GPU", 0) > 0]
    cpu_nodes = [name for name, node in node_types.items()
                 if name != "head" and node.get("resources", {}).get("GPU", 0) == 0]
    assert gpu_nodes, "no GPU worker node type for training"
    assert cpu_nodes, "no CPU worker node type for decoding"


def test_dashboard_binds_to_loopback():
    commands = " ".join(load_cluster_config()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands
    assert "0.0.0.0" not in commands


def test_security_group_opens_no_service_port():
    # Without these keys, `ray up` gives every node the security group it creates itself, which in
    # Ray 2.60 admits SSH (port 22) from anywhere and all traffic between the cluster's nodes.
    config = load_cluster_config()
    assert "security_group" not in config["provider"], "extra ingress rules could open the dashboard or MLflow"
    for name, node in config["available_node_types"].items():
        assert "SecurityGroupIds" not in node["node_config"], f"node type {name!r} brings its own security group"
        assert "NetworkInterfaces" not in node["node_config"], f"node type {name!r} sets its own network interfaces"

