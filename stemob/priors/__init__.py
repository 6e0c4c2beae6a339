"""The embedded diffusion prior's training recipe: ``procedural`` (generated images), ``images``
(training batches, user frames, tabletop renders), ``config``, ``metrics`` and ``train`` (the
resumable two-phase trainer and its CLI, ``python -m stemob.priors.train``).

The trained model itself lives in ``stemob/priors/embedded/`` as a diffusers folder that
``stemob.inversion.load_model("embedded", ...)`` finds as data; this package is only needed to
(re)train or fine-tune it.
"""
