"""Runtime code shipped inside every .mar: decode -> validate -> batch -> infer -> split -> encode.

Imports only torch, numpy, onnxruntime and pyyaml: never the build-time ``servekit`` package.
"""
