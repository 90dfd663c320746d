"""Build host: torch graphs, ONNX export and bundle building. Needs ``pip install edge-anomaly[export]``."""
