from gir.nn import Net, dense

net = Net("broken", [dense(4, 2)
