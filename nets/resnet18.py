"""ResNet-18 (He et al. 2016; torchvision resnet18) with a 10-class head and a 2x2/2 stem max-pool: 11,181,642 parameters."""
from gir.nn import H, N, W, Net, conv_bn, dense, global_avg_pool, max_pool, residual_stage
from gir.train import TrainConfig

net = Net(
    "resnet18",
    [
        conv_bn(3, 64, k=7, stride=2, name="stem"),
        max_pool(k=2, stride=2, padding="same"),  # non-overlapping: IREE cannot lower overlapping max-pool backward
        residual_stage(64, 64, stride=1, n=2),
        residual_stage(64, 128, stride=2, n=2),
        residual_stage(128, 256, stride=2, n=2),
        residual_stage(256, 512, stride=2, n=2),
        global_avg_pool(),
        dense(512, 10),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# torchvision's ResNet recipe (SGD 0.1 per 256 images, momentum 0.9, wd 1e-4), cosine with warmup, batch 64.
config = TrainConfig(learning_rate=0.05, batch_size=64, epochs=10, optimizer="sgd", momentum=0.9,
                     weight_decay=1e-4, cosine=True, warmup_epochs=1, label_smoothing=0.1, augment=True,
                     image_size=32)
