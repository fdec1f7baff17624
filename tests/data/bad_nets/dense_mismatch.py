"""The head expects 128 features but the pooled features have 64."""
from gir.nn import Net, conv_bn, global_avg_pool, dense

net = Net("dense_mismatch", [
    conv_bn(3, 64, k=3),
    global_avg_pool(),
    dense(128, 10),  # line 7: wrong fan-in
])
