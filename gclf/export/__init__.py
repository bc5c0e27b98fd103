"""Deployable artifacts: ONNX and OpenVINO export, INT8 quantization, the runners that load each file."""
