from gir.nn import Net, dense

layers = [dense(4, 2)]
raise RuntimeError("dataset path not configured")  # line 4
