
# The detectors --detector chooses from (by these names or by their weight ids), and their weight ids.
DETECTOR_WEIGHTS = {"retinaface_resnet50": "retinaface-resnet50", "retinaface_mobile0.25": "retinaface-mobile0.25"}
DEFAULT_DETECTOR = "retinaface_resnet50"
