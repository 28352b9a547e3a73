from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.base import TensorDataModule
from fer_lightning.data.features import FeaturesDataModule
from fer_lightning.data.fer2013 import FER2013DataModule
from fer_lightning.data.folder import ImageFolderDataModule
from fer_lightning.data.jaffe import JAFFEDataModule
from fer_lightning.data.synthetic import SyntheticFacesDataModule

__all__ = ["BatchAugment", "TensorDataModule", "FeaturesDataModule", "FER2013DataModule", "ImageFolderDataModule",
           "JAFFEDataModule", "SyntheticFacesDataModule"]
