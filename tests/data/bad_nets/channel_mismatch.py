"""Second conv expects 16 input channels but the first makes 32."""
from gir.nn import Net, conv_bn, global_avg_pool, dense

net = Net("channel_mismatch", [
    conv_bn(3, 32, k=3, stride=2),
    conv_bn(16, 64, k=3),  # line 6: wrong in-channels
    global_avg_pool(),
    dense(64, 10),
])
