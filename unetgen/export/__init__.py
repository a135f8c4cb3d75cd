"""Module → ONNX: the file contract, the verified writer and the checked reader/runner."""
