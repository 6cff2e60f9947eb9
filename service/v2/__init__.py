"""The Open Inference Protocol (KServe V2): the tensor codec and the model's V2 view."""
