"""Model definitions per target, ONNX export and parity check, bundles and the scorer."""
