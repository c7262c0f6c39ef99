"""The examples at the foot of each command's ``--help``: the README tour, one command each."""

from __future__ import annotations

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "list": [("nfstudy list", "the studies and their runs done/total"),
             ("nfstudy list --json", "the same as JSON, for scripts")],
    "show": [("nfstudy show clip-threshold", "expanded runs: arm, grid values, seed, hash, done"),
             ("nfstudy show clip-threshold --config 3", "run #3's resolved config"),
             ("nfstudy show clip-threshold --sweep agc.clipping=0.01,0.02 --seeds 0-4", "what a sweep would plan"),
             ("nfstudy show quickstart --json", "the same as JSON")],
    "run": [("nfstudy run quickstart", "train what is not finished yet"),
            ("nfstudy run quickstart --preset smoke --dry-run", "what a smoke-scale run would do"),
            ("nfstudy run clip-threshold --sweep agc.clipping=0.01,0.02 --seeds 0-4", "a grid axis and seeds"),
            ("nfstudy run quickstart --add-seeds 2", "two more seeds for every arm"),
            ("nfstudy run quickstart --only nf-agc --force", "train one arm again"),
            ("nfstudy run examples/own_model.yaml --workers 2", "your own model and data, two workers")],
    "sync": [("nfstudy sync", "upload runs spooled while the tracking server was away")],
    "ui": [("nfstudy ui", "the MLflow UI on 127.0.0.1:5000"),
           ("nfstudy ui --optuna", "and optuna-dashboard on 127.0.0.1:5001")],
    "worker": [("nfstudy worker --study quickstart --storage postgresql://USER@HOST/DB", "join a queue"),
               ("nfstudy worker --study own-model --import my_models", "with your plugin")],
    "search": [("nfstudy search agc-lambda --trials 20", "20 more Optuna trials over λ")],
    "report": [("nfstudy report quickstart", "the answer, figures, report.md and report.html"),
               ("nfstudy report --all", "every study with runs, and an index page")],
    "export": [("nfstudy export quickstart --format csv", "the per-arm and paired tables as CSV"),
               ("nfstudy export quickstart --format latex > tables.tex", "as LaTeX tables")],
    "enqueue": [("nfstudy enqueue clip-threshold --storage postgresql://USER@HOST/DB --tracking-uri http://HOST:5000",
                 "fill the queue; train nothing")],
    "launch slurm": [("nfstudy launch slurm clip-threshold --workers 8 --time 04:00:00 --dry-run",
                      "print the sbatch scripts"),
                     ("nfstudy launch slurm clip-threshold --workers 8 --gpus-per-worker 1 --time 04:00:00",
                      "a job array of 8 workers")],
    "status": [("nfstudy status clip-threshold", "waiting, running, finished, failed, diverged"),
               ("nfstudy status clip-threshold --json", "the same as JSON")],
    "bench": [("nfstudy bench", "what the framework costs, as ratios"),
              ("nfstudy bench --only cli", "how fast list and show answer")],
}


def epilog(command: str) -> str:
    """The ``Examples:`` block of ``command``'s help (one line per example)."""
    lines = [f"{line}   # {what}" for line, what in EXAMPLES[command]]
    return "Examples:\n\n" + "\n\n".join(lines)  # one paragraph each: help joins a paragraph's lines
