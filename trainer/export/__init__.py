"""`trainer export`: a trained model out of the framework, as safetensors, ONNX or TorchScript."""

from trainer.export.folder import (
    EXPORT_DIR,
    EXPORT_DIRS,
    FORMATS,
    MANIFEST_FILE,
    MODEL_FILES,
    ExportSource,
    export_model,
    load_exported,
)

__all__ = ["EXPORT_DIR", "EXPORT_DIRS", "FORMATS", "MANIFEST_FILE", "MODEL_FILES", "ExportSource", "export_model",
           "load_exported"]  # fmt: skip
