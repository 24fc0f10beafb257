"""MLflow models-from-code entry file for the ONNX translator (see ``serving.log_onnx_model``).

MLflow copies this file into every logged model and runs it at load time; ``set_model`` names
the object to serve. Nothing is pickled, so loading a model never unpickles arbitrary code. This
module is not imported by the package (running it is its only purpose).
"""

from mlflow.models import set_model

from cyclegan.serving import OnnxTranslator

set_model(OnnxTranslator())
