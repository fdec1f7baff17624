"""tinyGPT-nano, a character-level GPT (T=64, D=64, 2 heads, 4 blocks, untied head): 212,545 params at V=65."""
from gir.nn import (N, T, Constraints, Net, dense, layer_norm, position_embedding, token_embedding,
                    transformer_encoder)
from gir.train import TrainConfig

VOCAB = 65      # tinyshakespeare's characters; a corpus with another alphabet changes only this
BLOCK = 64      # context length: the most positions the position table has
DIM, HEADS, DEPTH = 64, 2, 4
DROPOUT = 0.1   # on each residual branch

net = Net(
    "char_gpt",
    [
        token_embedding(VOCAB, DIM),
        position_embedding(BLOCK, DIM),
        transformer_encoder(DIM, heads=HEADS, mlp=4 * DIM, depth=DEPTH, eps=1e-5, causal=True, dropout=DROPOUT),
        layer_norm(DIM),
        dense(DIM, VOCAB),
    ],
    input_shape=(N, T),
    input_dtype="i32",
    num_classes=VOCAB,
    sizes={"N": 32, "T": BLOCK},
    constraints=Constraints().at_most(T, BLOCK),
)

# The reference's recipe: Adam, weight decay 1e-4, batch 32, cosine decay after a 100-step warmup, 10K steps. An epoch
# of the built-in corpus (gir train's default data) is 487 steps of 32 windows of 64 characters, so 20 epochs are
# 9,740 steps and 0.2 epochs of warmup are 97.
config = TrainConfig(learning_rate=1e-3, batch_size=32, epochs=20, optimizer="adam", weight_decay=1e-4, cosine=True,
                     warmup_epochs=0.2, clip_norm=1.0, seq_len=BLOCK)
