"""A trained `nn.Module` as a graph: ONNX (run by onnxruntime) or TorchScript (run by libtorch), each checked
against PyTorch on sample inputs before it is kept."""

from __future__ import annotations

import contextlib
import io as _io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.errors import UserError
from trainer.model_io import SEAL_KEY, ModelIO, seal
from trainer.models import LSTMClassifier

# Outputs of the graph may differ from PyTorch's by float rounding (fused kernels, another summation order):
# |graph - torch| <= ATOL + RTOL * |torch|, elementwise, on the logits.
ATOL, RTOL = 1e-4, 1e-3


class UnpackedLSTMClassifier(nn.Module):
    """An LSTMClassifier's forward without PackedSequence, which neither ONNX nor TorchScript tracing take.

    Right padding leaves the forward direction exact at every real position. The backward direction must
    start at each sequence's last real token, so its input is reversed within each sequence's length (a
    gather), run forward, and reversed back: the same numbers as the packed path, layer by layer. The
    weights are the trained model's (one unidirectional LSTM per layer and direction, copied from it).
    """

    def __init__(self, model: LSTMClassifier) -> None:
        super().__init__()
        lstm = model.lstm
        self.embedding, self.dropout, self.head = model.embedding, model.dropout, model.head
        self.pooling = model.pooling
        self.bidirectional = lstm.bidirectional
        suffixes = ["", "_reverse"] if lstm.bidirectional else [""]
        self.layers = nn.ModuleList()
        for layer in range(lstm.num_layers):
            directions = nn.ModuleList()
            for suffix in suffixes:
                width = getattr(lstm, f"weight_ih_l{layer}{suffix}").shape[1]
                single = nn.LSTM(width, lstm.hidden_size, batch_first=True, bias=lstm.bias)
                single.load_state_dict({f"{name}_l0": getattr(lstm, f"{name}_l{layer}{suffix}")
                                        for name in _lstm_parameter_names(lstm.bias)})  # fmt: skip
                directions.append(single)
            self.layers.append(directions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(dim=1).clamp(min=1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        real = positions < lengths[:, None]
        # Each real position t of a sequence of length n reads position n-1-t; padding stays where it is.
        reverse = torch.where(real, lengths[:, None] - 1 - positions, positions)
        x = self.embedding(input_ids)
        for directions in self.layers:
            forward_out, _ = directions[0](x)
            if self.bidirectional:
                backward_out, _ = directions[1](_gather_time(x, reverse))
                x = torch.cat([forward_out, _gather_time(backward_out, reverse)], dim=-1)
            else:
                x = forward_out
        if self.pooling == "last":
            last = _gather_time(x, (lengths - 1)[:, None].expand(-1, 1)).squeeze(1)
            if self.bidirectional:  # the backward direction ends at position 0
                half = x.shape[-1] // 2
                last = torch.cat([last[:, :half], x[:, 0, half:]], dim=-1)
            features = last
        elif self.pooling == "max":
            features = x.masked_fill(~real.unsqueeze(-1), float("-inf")).amax(dim=1)
        else:
            mask = real.unsqueeze(-1).to(x.dtype)
            features = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return self.head(self.dropout(features))


def _lstm_parameter_names(bias: bool) -> list[str]:
    return ["weight_ih", "weight_hh", *(["bias_ih", "bias_hh"] if bias else [])]


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), index (B, T') -> (B, T', C): x[b, index[b, t]]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def exportable(model: nn.Module) -> nn.Module:
    """The module a graph is made from: the model itself, or its export-friendly equivalent."""
    graph_model = UnpackedLSTMClassifier(model) if isinstance(model, LSTMClassifier) else model
    return graph_model.eval()


def sample_inputs(model_io: ModelIO, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Two batches of another batch size and sequence length each (the dynamic axes must really be dynamic),
    with padding of varied length for text. Random values: the parity check needs no data set."""
    generator = torch.Generator().manual_seed(seed)
    pre = model_io.preprocess
    batches = []
    for batch, length in ((3, 12), (2, 7)):
        if pre["kind"] == "image":
            shape = (batch, pre["channels"], *pre["image_size"])
            batches.append((torch.randn(shape, generator=generator),))
            continue
        length = min(length, model_io.max_sequence or length)
        ids = torch.randint(0, pre["vocab_size"], (batch, length), generator=generator)
        if pre["kind"] == "prompt":
            batches.append((ids,))
            continue
        lengths = torch.randint(1, length + 1, (batch,), generator=generator)
        lengths[0] = length  # one full row: the padded batch's width is real
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        batches.append((ids.masked_fill(mask == 0, pre["pad_id"]), mask))
    return batches


def write_onnx(model: nn.Module, model_io: ModelIO, path: Path) -> None:
    """torch.onnx's exporter (torch.export underneath), dynamic batch and sequence axes."""
    graph_model = exportable(model)
    example = sample_inputs(model_io)[0]
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=model_io.max_sequence) if model_io.max_sequence else None
    # By position, not by name: torch.export keys a dict by the forward's own argument names, which a custom
    # model chooses (`forward(self, x)`); the graph's input names come from input_names below.
    shapes = tuple(
        {axis: batch if size == "batch" else sequence for axis, size in enumerate(spec.shape) if isinstance(size, str)}
        for spec in model_io.inputs
    )
    with _quiet():
        torch.onnx.export(
            graph_model,
            example,
            str(path),
            input_names=[spec.name for spec in model_io.inputs],
            output_names=[spec.name for spec in model_io.outputs],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,  # one file: the models here are far below ONNX's 2 GB protobuf limit
            verbose=False,
        )
    import onnx

    graph = onnx.load(str(path))
    _declare_dynamic_axes(graph, model_io)
    graph.metadata_props.add(key=SEAL_KEY, value=seal(model_io))  # what predict checks manifest.json against
    onnx.save(graph, str(path))


def _declare_dynamic_axes(graph: Any, model_io: ModelIO) -> None:
    """The graph's declared input and output shapes, dynamic where the manifest's are. torch.export keeps the
    example's length on an LSTM's output and the shapes noted between nodes (the computation is dynamic all
    the same), and onnxruntime then warns (VerifyOutputSizes) at every call whose length differs: at every
    token a language model generates. The notes between nodes are optional; onnxruntime infers its own."""
    del graph.graph.value_info[:]
    for specs, values in ((model_io.inputs, graph.graph.input), (model_io.outputs, graph.graph.output)):
        for spec, value in zip(specs, values, strict=True):
            dims = value.type.tensor_type.shape.dim
            for axis, size in enumerate(spec.shape):
                if isinstance(size, str) and axis < len(dims):
                    dims[axis].ClearField("dim_value")
                    dims[axis].dim_param = size


def write_torchscript(model: nn.Module, model_io: ModelIO, path: Path) -> None:
    """torch.jit.trace (deprecated by torch in favour of torch.export, but what libtorch and C++ serving load)."""
    graph_model = exportable(model)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph_model, sample_inputs(model_io)[0], check_trace=False)
    traced.save(str(path), _extra_files={SEAL_KEY: seal(model_io)})  # what predict checks manifest.json against


def check_parity(model: nn.Module, model_io: ModelIO, run_graph: Callable[..., np.ndarray], what: str) -> float:
    """The graph's logits against the PyTorch model's, on sample inputs of several shapes; the largest
    difference, or a one-line error if beyond tolerance."""
    worst = 0.0
    for inputs in sample_inputs(model_io, seed=1):
        with torch.no_grad():
            expected = model.eval()(*inputs).float().numpy()
        got = run_graph(*(tensor.numpy() for tensor in inputs))
        if got.shape != expected.shape:
            raise UserError(f"the {what} graph gives logits of shape {got.shape}, PyTorch {expected.shape}; "
                            "export format=safetensors instead")  # fmt: skip
        excess = np.abs(got - expected) - (ATOL + RTOL * np.abs(expected))
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.all(excess <= 0):
            raise UserError(
                f"the {what} graph's logits differ from PyTorch's by up to {worst:.3g} (allowed {ATOL} + {RTOL} x "
                "|value|) on sample inputs; nothing was exported: export format=safetensors instead"
            )
    return worst


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and deprecation warnings to stdout and stderr; the CLI prints one line."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", and the like
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)
