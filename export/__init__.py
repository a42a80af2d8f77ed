"""ONNX export of meta-learned policies and their adaptation graphs (training side)."""
