"""Click training for the embedded LiteMedSAM: generated data, SAM's recipe, checks.

:mod:`~sam_viz.synthetic.scenes` makes scenes with exact nested masks,
:mod:`~sam_viz.training.data` encodes them (and the data engine's masks on scikit-image's
samples), :mod:`~sam_viz.training.clicks` trains (drawing prompts with
:mod:`~sam_viz.training.sampling`, scoring them with :mod:`~sam_viz.training.losses`, in the
loop of :mod:`~sam_viz.training.steps`), :mod:`~sam_viz.training.calibration` can then train
the IoU head alone, :mod:`~sam_viz.training.pipeline` runs it all from one seed
(``sam-viz train-clicks``) and :mod:`~sam_viz.training.evaluate` holds the checks the result
must pass. Why the recipe's options are set as they are: ``docs/decisions.md``.
"""
