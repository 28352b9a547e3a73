"""fer_lightning: train and compare facial-expression-recognition models as a cached stage DAG."""

__version__ = "0.1.0"

# The FER2013 label order (0=Angry ... 6=Neutral). Every dataset in the product maps onto it.
CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
