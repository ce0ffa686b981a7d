"""The released training loop's evaluation rule as a loop (engine/refinement.py's schedule)."""


def released_eval_epochs(epochs, eval_freq):
    """The released training loop's test: after 0-based epoch e, evaluate when
    (e + 1) % eval_freq == 0 or e > epochs - 10."""
    chosen = []
    for epoch in range(epochs):
        if (epoch + 1) % eval_freq == 0:
            chosen.append(epoch)
        elif epoch > epochs - 10:
            chosen.append(epoch)
    return chosen
