"""Other libraries' U-Nets as unetgen specs and weights, and back: nnU-Net (``nnunet.py``), MONAI (``monai.py``)."""
