"""Five stride-2 stages leave ceil(H/32) pixels, too few for a valid 7x7 kernel at small H."""
from gir.nn import Net, conv_bn, global_avg_pool, dense

net = Net("kernel_too_large", [
    conv_bn(3, 8, k=3, stride=2),
    conv_bn(8, 8, k=3, stride=2),
    conv_bn(8, 8, k=3, stride=2),
    conv_bn(8, 8, k=3, stride=2),
    conv_bn(8, 8, k=3, stride=2),
    conv_bn(8, 8, k=7, padding="valid"),  # line 10: 7x7 valid on ceil(H/32)
    global_avg_pool(),
    dense(8, 10),
])
