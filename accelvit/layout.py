"""The files of a saved model folder, named once (``serialize``, ``export`` and ``card`` read and write them)."""

WEIGHTS_FILE = "model.safetensors"  # every tensor; sparse ones packed (accelvit.sparse_io)
SPEC_FILE = "accelvit.json"  # the architecture spec, structure, class names and meta
CARD_FILE = "README.md"  # the model card (accelvit.card)
TRAIN_METRICS_FILE = "metrics.json"  # test metrics of ``accelvit train``
ONNX_FILE = "model.onnx"  # a verified ONNX export (accelvit.export)
ONNX_REPORT = "onnx.json"  # how that export was checked
