"""An iris classifier trained at start-up from the data set scikit-learn ships."""

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Handler:
    def __init__(self, config):
        iris = load_iris()
        self.labels = list(iris.target_names)
        self.model = LogisticRegression(max_iter=config.get("max_iter", 500))
        self.model.fit(iris.data, iris.target)

    def handle_async(self, payload):
        row = [[float(payload[name]) for name in FEATURES]]
        probabilities = self.model.predict_proba(row)[0]
        best = int(probabilities.argmax())
        return {
            "prediction": self.labels[best],
            "probabilities": {label: round(float(p), 4) for label, p in zip(self.labels, probabilities, strict=True)},
        }
