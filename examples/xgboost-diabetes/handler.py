"""Diabetes progression predicted by gradient-boosted trees (XGBoost) from model.json (built by build_model.py)."""

import numpy as np
import xgboost


class Handler:
    def __init__(self, config):
        # The working directory is the project root: the model is found by its relative path.
        self.booster = xgboost.Booster(model_file=config.get("model", "model.json"))
        # One replica answers one request at a time: a thread per core would only contend with other replicas.
        self.booster.set_param({"nthread": int(config.get("threads", 1))})
        self.features = self.booster.feature_names

    def handle_async(self, payload):
        missing = [name for name in self.features if name not in payload]
        if missing:
            raise ValueError(f"missing measurements: {', '.join(missing)} (expected {', '.join(self.features)})")
        row = np.array([[float(payload[name]) for name in self.features]])
        prediction = self.booster.predict(xgboost.DMatrix(row, feature_names=self.features))
        # A quantitative measure of disease progression one year after baseline (25 to 346 in the training data).
        return {"progression": round(float(prediction[0]), 1)}
