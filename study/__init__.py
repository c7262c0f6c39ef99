"""nfstudy: declarative ablation studies on PyTorch, tracked in MLflow and searched with
Optuna; its first use reproduces the NFNets paper's ablations (Brock et al., ICML 2021)."""

__version__ = "0.1.0"
