"""Inference: loading a trained model for scoring (the ONNX artifact, else Keras) and verdicts
on new media within limits (time, pixels, decoded frames) and access rules."""
