"""Run under torchrun (or alone) by tests/test_distributed.py: the gradient of one training step
of a recipe, through zoo.distributed's step exactly as the loop takes it, written by rank 0 as
safetensors (after DDP's all-reduce every rank holds the same gradient).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_probe.py OUT RECIPE [key=value ...]
"""

import sys
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from zoo import assemble, distributed
from zoo.recipe import load_recipe
from zoo.tasks import split_item
from zoo.train import initial_batch, make_loaders


def main(out: str, name: str, *overrides: str) -> None:
    recipe = load_recipe(name, overrides=list(overrides))
    distributed.setup(recipe)
    torch.set_num_threads(1)
    torch.manual_seed(int(recipe.train["seed"]))
    dataset = assemble.build_dataset(recipe)
    task = assemble.build_task(recipe)
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits)
    loss_fn = assemble.build_objective(recipe, dataset)
    train, _, _ = make_loaders(dataset, recipe, int(recipe.train["seed"]))
    distributed.initialize(task, model, *split_item(initial_batch(train), torch.device("cpu")))
    mode = assemble.build_gradient_mode(recipe)
    mode.prepare(model)
    state = SimpleNamespace(model=model, task=task, device=torch.device("cpu"))
    x, y = split_item(next(iter(train)), state.device)
    loss, _ = distributed.step_loss(state, x, y, mode, loss_fn)
    loss.backward()
    if distributed.is_main():
        grads = {f"grad.{k}": p.grad.contiguous() for k, p in model.named_parameters() if p.grad is not None}
        save_file({**grads, "loss": loss.detach().reshape(1)}, out)
    distributed.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:])
