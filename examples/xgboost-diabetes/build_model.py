"""Train gradient-boosted trees on the diabetes data set scikit-learn ships and write them to model.json.

    pip install -r build-requirements.txt
    python build_model.py                  # writes model.json next to this script
    python build_model.py -o /tmp/x.json   # or elsewhere

The target is a measure of disease progression one year after baseline (25 to 346 in the data). Training is
seeded and single-threaded, so a rebuilt model gives the committed one's predictions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xgboost
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

# scikit-learn's s1..s6 under the names of the serum measurements they are.
FEATURES = ["age", "sex", "bmi", "bp", "tc", "ldl", "hdl", "tch", "ltg", "glu"]
PARAMS = {
    "objective": "reg:squarederror",
    "max_depth": 2,
    "eta": 0.05,
    "min_child_weight": 5,
    "nthread": 1,
    "seed": 0,
}
ROUNDS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the XGBoost diabetes regressor.")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "model.json")
    args = parser.parse_args()

    # Unscaled: ages in years, blood pressure in mm Hg, as a caller would send them.
    data, target = load_diabetes(return_X_y=True, scaled=False)
    train_x, test_x, train_y, test_y = train_test_split(data, target, test_size=0.2, random_state=0)
    booster = xgboost.train(
        PARAMS, xgboost.DMatrix(train_x, label=train_y, feature_names=FEATURES), num_boost_round=ROUNDS
    )
    booster.save_model(args.output)

    # Check the written file, not the booster in memory.
    loaded = xgboost.Booster(model_file=args.output)
    predicted = loaded.predict(xgboost.DMatrix(test_x, feature_names=FEATURES))
    assert np.allclose(predicted, booster.predict(xgboost.DMatrix(test_x, feature_names=FEATURES)))
    print(
        f"wrote {args.output} ({args.output.stat().st_size} bytes); on {len(test_y)} held-out patients"
        f" R² {r2_score(test_y, predicted):.3f}, mean absolute error {mean_absolute_error(test_y, predicted):.1f}"
    )


if __name__ == "__main__":
    main()
