"""Model catalog, inference-object resolution, the ONNX engine and the Qdrant-compatible data plane.

Importing qdrant-client also imports fastembed (and with it onnxruntime) for the client's *local*
inference mode, which this server never uses: it only needs the client's REST models and HTTP client.
So that importing the web app does not load an ML runtime, qdrant-client is first imported here with
fastembed hidden. The engine still loads onnxruntime itself, lazily, on the first embedding.
"""

import sys

if "qdrant_client" not in sys.modules and "fastembed" not in sys.modules:
    sys.modules["fastembed"] = None  # type: ignore[assignment]  # makes `import fastembed` raise ImportError
    try:
        import qdrant_client  # noqa: F401
    finally:
        del sys.modules["fastembed"]
