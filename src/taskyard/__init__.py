"""taskyard: ML CI/CD tasks defined once in Python, rendered to Tekton and Argo, run locally."""

__version__ = "0.1.0"
