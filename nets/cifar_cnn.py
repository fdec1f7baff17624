"""VGG-style CIFAR-10 CNN with batch norm: conv-BN-ReLU stages 64x2, 128x3, 256x4, 512 with 2x2 pools, GAP."""
from gir.nn import H, N, W, Constraints, Net, conv_bn, dense, global_avg_pool, max_pool
from gir.train import TrainConfig

STAGES = [(64, 2), (128, 3), (256, 4), (512, 1)]  # (channels, convs); a 2x2 max-pool between stages

layers, ic = [], 3
for i, (oc, reps) in enumerate(STAGES):
    if i:
        layers.append(max_pool(2))
    for _ in range(reps):
        layers.append(conv_bn(ic, oc, k=3))
        ic = oc

# three 2x2 pools: H and W must be multiples of 8 so the shapes stay exact (H/2, H/4, H/8)
constraints = Constraints().at_least(H, 8).divisible_by(H, 8).at_least(W, 8).divisible_by(W, 8)
net = Net("cifar_cnn", layers + [global_avg_pool(), dense(ic, 10)], input_shape=(N, 3, H, W), num_classes=10,
          constraints=constraints, sizes={"H": 32, "W": 32})

config = TrainConfig(learning_rate=0.05, batch_size=128, epochs=30, optimizer="sgd", momentum=0.9,
                     weight_decay=5e-4, cosine=True, warmup_epochs=1, augment=True, image_size=32)
