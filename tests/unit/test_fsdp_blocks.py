"""Which modules FSDP2 shards as units before the root (trainer.distributed.fsdp.find_blocks), on the shipped
model families, a Transformers-style model and a named block class; and what `trainer plan` says they cost."""

from __future__ import annotations

import pytest
from torch import nn

from trainer.distributed.fsdp import check_block_classes, find_blocks
from trainer.distributed.planning import fsdp_rows
from trainer.errors import UserError
from trainer.models.cnn import CNN
from trainer.models.lstm import LSTMLanguageModel
from trainer.models.transformer import GPT, Block


def test_a_transformer_is_sharded_block_by_block_with_its_tied_embedding_left_to_the_root() -> None:
    model = GPT(vocab_size=50, max_len=16, d_model=16, n_heads=2, n_layers=3, d_ff=None, dropout=0.0)
    blocks = find_blocks(model, None)
    assert len(blocks) == 3 and all(isinstance(b, Block) for b in blocks)


def test_a_model_without_repeated_blocks_is_sharded_by_its_children_but_tied_weights_stay_in_the_root() -> None:
    cnn = CNN(in_channels=1, num_classes=10, channels=[4, 8])
    assert find_blocks(cnn, None) == [cnn.features, cnn.head]
    tied = LSTMLanguageModel(vocab_size=50, embed_dim=16, hidden_size=16, tie_weights=True)
    assert find_blocks(tied, None) == [tied.lstm]  # embedding and head share one weight: both stay in the root
    untied = LSTMLanguageModel(vocab_size=50, embed_dim=16, hidden_size=16, tie_weights=False)
    assert find_blocks(untied, None) == [untied.embedding, untied.lstm, untied.head]
    with pytest.raises(UserError, match=r"'Embedding': its weight embedding.weight is tied to one outside it"):
        check_block_classes(tied, ("Embedding",))


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


class HubStyleModel(nn.Module):
    _no_split_modules = ["Layer"]  # what a Transformers model says of its own blocks

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Layer(), Layer()])


class Wrapper(nn.Module):  # as the framework wraps a pretrained model (trainer/models/pretrained.py)
    def __init__(self) -> None:
        super().__init__()
        self.backbone = HubStyleModel()


def test_a_transformers_models_own_block_list_wins_and_nested_blocks_are_not_units_of_their_own() -> None:
    model = Wrapper()
    assert find_blocks(model, None) == list(model.backbone.layers)  # not the Linear layers inside them
    assert find_blocks(model, ("Linear",)) == [m for layer in model.backbone.layers for m in layer.inner]


def test_a_block_class_the_model_lacks_is_refused_naming_its_blocks() -> None:
    model = GPT(vocab_size=50, max_len=16, d_model=16, n_heads=2, n_layers=2, d_ff=None, dropout=0.0)
    check_block_classes(model, ("Block",))
    with pytest.raises(
        UserError, match=r"fsdp.block_class='BertLayer' is not a class of this model; its blocks are Block"
    ):
        check_block_classes(model, ("BertLayer",))


def test_plans_fsdp_rows_are_the_sharded_state_plus_what_each_variant_gathers() -> None:
    rows = {row.strategy: row for row in fsdp_rows(parameters=1600, largest_unit=100, gpus_per_node=8, nodes=2)}
    assert rows["fsdp"].gpu_bytes == 16 * 1600 // 16 + 6 * 100  # fp32 shards + one unit gathered (bf16 + fp32 grad)
    assert rows["fsdp_shard_grad_op"].gpu_bytes == 1600 + 2 * 1600 + 4 * 100  # every unit's bf16 weights kept
    assert (rows["fsdp_cpu_offload"].gpu_bytes, rows["fsdp_cpu_offload"].cpu_bytes) == (600, 1600 * 8)
    fp32 = {row.strategy: row for row in fsdp_rows(1600, 100, gpus_per_node=8, nodes=2, gathered_bytes=4)}
    assert fp32["fsdp"].gpu_bytes == 1600 + 8 * 100 and fp32["fsdp_shard_grad_op"].gpu_bytes == 1600 + 4 * 1600 + 400
