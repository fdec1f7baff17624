"""A custom residual layer that adds a stride-2 branch to its unstrided input."""
from gir.nn import Net, conv_bn, global_avg_pool, dense, layer


@layer("res")
def strided_residual(b, x, c):
    y = conv_bn(c, c, k=3, stride=2)(b, x, name="branch")
    return b.add(x, y)  # line 8: shapes differ


net = Net("residual_mismatch", [
    conv_bn(3, 16, k=3),
    strided_residual(16),
    global_avg_pool(),
    dense(16, 10),
])
