"""drift-retrain: retrain only when the data drifted; the same gate as train-eval-deploy."""

from taskyard.catalog.pipelines.train_eval_deploy import build

PIPELINE = build(
    "drift-retrain",
    with_tests=False,
    drift=True,
    display_name="Retrain when the data drifts",
    description=(
        "Clones the project and compares a current batch (the project's data now, a file, or "
        "the model server's window of live inputs) with the champion's training reference; "
        "only if it drifted, retrains, evaluates, and promotes and deploys through the same "
        "gate as train-eval-deploy. Fired by the drift alert and on a schedule."
    ),
)
