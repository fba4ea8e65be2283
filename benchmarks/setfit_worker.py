"""SetFit's side of benchmarks/finetune_vs_setfit.py, run by an interpreter that has SetFit.

SetFit is not in Graft's locks (it pins its own ``datasets`` and more), so the comparison can run it in a
throwaway virtual environment: this module imports only SetFit, ``datasets`` and numpy, reads one job as JSON on
standard input (``{"model_dir", "device", "train": [{"input", "label"}], "test": [...]}``) and prints
``{"seconds", "accuracy"}`` on its last line of standard output.

    python -m venv /tmp/sfenv && /tmp/sfenv/bin/pip install -c constraints/cpu.txt torch==2.13.0 \\
        transformers==5.25.0 sentence-transformers==6.3.0 setfit
"""

from __future__ import annotations

import json
import sys
import tempfile
import time


def setfit_row(model_dir: str, device: str, train: list[dict], test: list[dict]) -> dict:
    """Train SetFit with the quality harness's recipe (1 epoch, 20 pair iterations, batch 16, seed 0) on
    ``train`` and score it on ``test``; training time is wall time (CUDA synchronised)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    model = SetFitModel.from_pretrained(model_dir, device=device)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="graft-setfit-"), save_strategy="no", batch_size=16,
                             num_epochs=1, num_iterations=20, seed=0, report_to="none", show_progress_bar=False)
    data = Dataset.from_dict({"text": [r["input"] for r in train], "label": [r["label"] for r in train]})
    trainer = Trainer(model=model, args=args, train_dataset=data)
    sync()
    started = time.perf_counter()
    trainer.train()
    sync()
    seconds = time.perf_counter() - started
    predicted = [str(p) for p in model.predict([r["input"] for r in test], batch_size=64)]
    return {
        "seconds": seconds,
        "accuracy": float(np.mean([p == r["label"] for p, r in zip(predicted, test, strict=True)])),
    }


if __name__ == "__main__":
    job = json.load(sys.stdin)
    print(json.dumps(setfit_row(job["model_dir"], job["device"], job["train"], job["test"])))
