from fer_lightning.models.cnn import CNN1, CNN2, CNN3, FERNet
from fer_lightning.models.fusion import FusionNet

__all__ = ["CNN1", "CNN2", "CNN3", "FERNet", "FusionNet"]
