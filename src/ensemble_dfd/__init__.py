"""ensemble_dfd: deepfake face detection with ten fine-tuned backbones and their ensembles."""

__version__ = "0.1.0"

REAL, FAKE = 1, 0
CLASS_NAMES = ("Fake", "Real")  # folder order, as Keras' image_dataset_from_directory sorts it
