"""ViT-Tiny/16 (Dosovitskiy et al. 2021; timm vit_tiny_patch16_224) with a 10-class head."""
from gir.nn import N, Net, class_token_pool, dense, layer_norm, patch_embed, transformer_encoder
from gir.train import TrainConfig

net = Net(
    "vit_tiny",
    [
        patch_embed(3, 192, patch=16),
        transformer_encoder(192, heads=3, mlp=768, depth=12),
        layer_norm(192, eps=1e-6),
        class_token_pool(),
        dense(192, 10),
    ],
    input_shape=(N, 3, 224, 224),
    num_classes=10,
)

# DeiT-style AdamW recipe (wd 0.05, warmup, label smoothing, grad clipping), for batch 64.
config = TrainConfig(learning_rate=5e-4, batch_size=64, epochs=10, optimizer="adamw", weight_decay=0.05,
                     cosine=True, warmup_epochs=2, label_smoothing=0.1, clip_norm=1.0, augment=True,
                     image_size=224)
