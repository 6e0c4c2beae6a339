"""The embedded diffusion prior: procedural training images and the training recipe (``stemob.priors.train``).

The trained model itself lives in ``stemob/priors/embedded/`` as a diffusers folder that
``stemob.inversion.load_model("embedded", ...)`` finds as data; this package is only needed to
(re)train or fine-tune it.
"""
