"""TensorFlow graphs → LiteRT builtins: the gradient rewrites that keep a Grad-CAM graph's
backward pass builtin-only (`gradients`), and the conversion with its checks (`convert`)."""
