"""qbench: does W8A8 quantization make this model faster on this GPU, and how sure are we?"""

__version__ = "0.1.0"
