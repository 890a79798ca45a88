"""`trainer predict`: a trained model on new inputs, from an export folder or a run directory.

From an ONNX export this needs onnxruntime, numpy, Pillow and tokenizers only: neither torch, Lightning
nor DeepSpeed is imported (see backends.py)."""
