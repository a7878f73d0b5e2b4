"""Export of a model file to timm, ONNX and TorchScript."""
