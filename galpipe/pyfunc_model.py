"""The MLflow pyfunc model galpipe logs, as "models from code": MLflow runs this file (not a
pickle) when someone loads a galpipe model with `mlflow.pyfunc.load_model` or serves it with
`mlflow models serve`. Its input is a float32 (n, 3, 69, 69) array of model inputs, its output
p(class 1) per row. galpipe itself never runs it: it reads the two artifacts directly
(galpipe.tracking.load_registered_model)."""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class GalpipeClassifier(PythonModel):
    def load_context(self, context):
        from galpipe.models import load_model_files

        self.model = load_model_files(context.artifacts["weights"], context.artifacts["architecture"])

    def predict(self, context, model_input: np.ndarray, params=None):  # an array: MLflow infers no schema from it
        from galpipe.training import predict_proba

        return predict_proba(self.model, np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(GalpipeClassifier())
