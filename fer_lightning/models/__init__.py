from fer_lightning.models.attention_cnn import MultiScaleAttentionCNN
from fer_lightning.models.cnn import CNN1, CNN2, CNN3, FERNet
from fer_lightning.models.fusion import FusionNet
from fer_lightning.models.head import FeatureHead
from fer_lightning.models.resnet import ResNet
from fer_lightning.models.torchvision_nets import TorchvisionNet
from fer_lightning.models.vgg1x1 import VGG1x1
from fer_lightning.models.vggnet import VGGNet

__all__ = ["CNN1", "CNN2", "CNN3", "FERNet", "FeatureHead", "FusionNet", "MultiScaleAttentionCNN",
           "ResNet", "TorchvisionNet", "VGG1x1", "VGGNet"]
