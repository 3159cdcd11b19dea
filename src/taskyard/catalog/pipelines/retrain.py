"""retrain: scheduled retraining; the same gate as train-eval-deploy, without the tests."""

from taskyard.catalog.pipelines.train_eval_deploy import build

PIPELINE = build(
    "retrain",
    with_tests=False,
    display_name="Retrain on a schedule",
    description=(
        "Clones the project, retrains on current data, and promotes and deploys only through "
        "the same evaluation gate as train-eval-deploy. Fired by cron."
    ),
)
