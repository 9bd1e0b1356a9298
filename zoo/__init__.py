"""zoo: a declarative model zoo for normalizing flows on PyTorch.

    import zoo
    recipe = zoo.load_recipe("recipes/toydensity.yaml", overrides=["train.epochs=2"])
    model = zoo.build_model(recipe)          # FlowModel, untrained
    result = zoo.run(recipe)                 # train + evaluate: run folder and test metrics
    model = zoo.from_pretrained("glow-celeba-3x32")
    z = zoo.encode(model, images); zoo.decode(model, z)          # latent space (zoo.latents)
    zoo.temperature_grid(model, [0, 0.5, 1], n=8); zoo.interpolate(model, a, b, steps=8)
    zoo.manipulate(model, image, zoo.attribute_direction(model, dataset, "Smiling"), [0, 1.6])
    zoo.score_folder(model, "folder/", reference=latents)       # rank images (zoo.anomaly)
"""

from zoo.errors import ZooError
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ZooError",
    "hookimpl",
    "load_recipe",
    "build_model",
    "run",
    "from_pretrained",
    "load_run",
    "FlowModel",
    "encode",
    "decode",
    "temperature_grid",
    "interpolate",
    "attribute_direction",
    "manipulate",
    "training_latents",
    "score_folder",
    "__version__",
]

LATENT_API = ("encode", "decode", "temperature_grid", "interpolate", "attribute_direction", "manipulate",
              "training_latents")


def __getattr__(name):
    # Imported on first use so that `import zoo` (and plugin imports of `zoo.hookimpl`) stay
    # light and never import a plugin while the registry is being built.
    if name == "load_recipe":
        from zoo.recipe import load_recipe

        return load_recipe
    if name == "build_model":
        from zoo.assemble import build_model

        return build_model
    if name in ("run", "load_run"):
        from zoo import train

        return getattr(train, name)
    if name == "from_pretrained":
        from zoo.hub import from_pretrained

        return from_pretrained
    if name in LATENT_API:
        from zoo import latents

        return getattr(latents, name)
    if name == "score_folder":
        from zoo.anomaly import score_folder

        return score_folder
    if name == "FlowModel":
        from zoo.flow import FlowModel

        return FlowModel
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
