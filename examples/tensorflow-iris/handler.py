# A Cortex TensorFlow handler, unchanged: tensorflow_client runs the SavedModel named in cortex.yaml.
labels = ["setosa", "versicolor", "virginica"]


class Handler:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def handle_async(self, payload, request_id):
        prediction = self.client.predict(payload)
        predicted_class_id = int(prediction["class_ids"][0])
        return {"prediction": labels[predicted_class_id], "probabilities": prediction["probabilities"]}
