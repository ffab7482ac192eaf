"""The napari plugin of sam_viz.

napari reaches it only through the manifest (``sam_viz/napari.yaml``); this package
``__init__`` imports nothing, so ``import sam_viz`` never pulls in Qt or napari.

Modules:
    _scheduling: debounce, latest-wins and the embedding queue (plain Python, no Qt).
    _slicing: which 2-D plane of an n-D image layer is being segmented (no Qt).
    _prompts: Points/Shapes layer data to SAM prompts in image pixels (no Qt).
    _predict: one prompt set to three candidate label images (no Qt).
    _workers: worker functions that hand errors back instead of raising.
    _layers: creating and editing the plugin's napari layers.
    _candidates: the three candidate layers, one shown at a time.
    _embedder: embedding the planes of an image in a napari worker.
    _automatic: segment everything on a plane, propagate an object through a stack (no Qt).
    _tasks: those two as long tasks in a napari worker, with progress and Cancel.
    _models: the model and device choice, and loading the model in a worker.
    _lifetime: when the dock widget's life ends (napari's X on the dock, the viewer closing).
    _controls, _widget: the dock widget's controls, and the widget tying it all together.
    _sample_data: scikit-image sample images for File > Open Sample.
"""
