"""The run machinery around the method: from a resolved config to a trained, evaluated cascade.

Read engine/training.py first: `train` is the whole run as a recipe. Each line calls a part
with one home here:

- run.py         the entry point of main_*.py: config, run folder, lock, errors, then train
                 or test mode
- training.py    the recipe: data, the step's parts, epoch loop, evaluation, checkpoints
- refinement.py  the step schedule (when a step switches, when to evaluate)
- steps.py       the one builder of a step's model, loss and optimizer (base vs full model)
- passes.py      the training epoch, the inference pass, evaluation and pseudo proposals
- cascade.py     the trained cascade: test mode and predict.py
- checkpoints.py checkpoint names, saving, reading, resume state (RNG)
- run_folder.py  a run folder's identity (config.json), test-mode folders
- record.py      metrics.jsonl and results.json
- reports.py     log lines, per-class tables, TensorBoard, plots of an evaluation
- plots.py       the figures (per-video CAS / attention / proposals, mAP per step)
- heldout.py     --val_videos: held-out training videos for model selection
- distributed.py torchrun: global batches, sharded passes, DDP
- timing.py      named parts of a run, the seam benchmarks time through
- precision.py   determinism settings of the run
- ablation.py    the grid of ablate.py

Imports point down: the method modules at the repository root (config, model, losses,
dataset, sampling, proposals, utils), eval/ and features/ never import engine/.
"""
