"""Exporting MODNet from PyTorch to ONNX (installed as ``vbg.export``; needs the
``export`` extra: ``pip install -e .[export]``).

``modnet``: the architecture; ``weights``: official checkpoints and the weights out of
an existing ONNX file; ``convert``: fp32 / fp16 / int8 ONNX files, checked.
"""
