"""The multi-step refinement schedule (docs/method.md §10), as pure functions of the epoch.

Step 0 trains the base model for epochs_per_step epochs; at epochs k * epochs_per_step
(k = 1..num_steps) the current model's pseudo proposals hand over to a fresh full model, and the
last step trains until `epochs`. Evaluation follows the released rule.
"""


def is_switch_epoch(epoch, args):
    """Epochs at which training moves on to the next refinement step."""
    return 0 < epoch <= args.epochs_per_step * args.num_steps and epoch % args.epochs_per_step == 0


def step_of_epoch(epoch, args):
    """The refinement step that trains 0-based `epoch`."""
    return min(epoch // args.epochs_per_step, args.num_steps)


def is_eval_epoch(epoch, args):
    """Evaluate after 0-based `epoch`: every eval_freq epochs and in the last 9 (the released rule
    `(epoch + 1) % eval_freq == 0 or epoch > epochs - 10`)."""
    return (epoch + 1) % args.eval_freq == 0 or epoch > args.epochs - 10


def is_last_epoch_of_step(epoch, step, args):
    """The epoch after which step `step` (< num_steps) saves model_step{k}_last_epoch.pth."""
    return step < args.num_steps and epoch + 1 == (step + 1) * args.epochs_per_step


def is_step_end(epoch, args):
    """The last epoch of a step (the next one switches, or the run ends)."""
    return epoch + 1 == args.epochs or is_switch_epoch(epoch + 1, args)
