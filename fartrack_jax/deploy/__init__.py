"""Deployment: exports of the tracking network (`export`, needs JAX) and a tracker that runs an ONNX export
with numpy, OpenCV and onnxruntime only (`runtime`, imports no JAX). Nothing is imported here, so that
`fartrack_jax.deploy.runtime` stays free of JAX."""
