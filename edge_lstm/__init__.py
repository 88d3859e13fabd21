"""edge-lstm: take LSTM models trained in PyTorch to edge devices.

Kept free of heavy imports: device-side code imports this package with only
numpy and one runtime installed.
"""

__version__ = "0.1.0"
