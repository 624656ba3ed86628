"""MLflow pyfunc wrapper, so a registered bundle also loads with ``mlflow.pyfunc``."""

from __future__ import annotations

import mlflow.pyfunc


class BundleModel(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame of canonical tickets with the bundle in ``artifacts['bundle']``."""

    def load_context(self, context) -> None:
        from .scorer import Scorer

        self.scorer = Scorer(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        records = model_input.to_dict("records")
        answers = self.scorer.score(records)
        return pd.DataFrame(
            {
                "category": [a.get("category", {}).get("code") for a in answers],
                "category_probability": [
                    a.get("category", {}).get("probability") for a in answers
                ],
                "needs_review": [a.get("needs_review") for a in answers],
            }
        )
